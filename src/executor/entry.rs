//! Order entry: an intent prepared against the rules, the market, the balances and the
//! strategy's limits (`prepare`), then placed, cancelled or replaced through the one
//! [`OrderDesk`], and the exchange's answer turned into an [`Outcome`].

use super::*;

pub(super) fn refused(code: RefusalCode, rule: impl Into<String>, reason: impl Into<String>) -> Outcome {
    Outcome::Refused { rule: rule.into(), reason: reason.into(), code }
}

/// A local refusal on its way to becoming an [`Outcome::Refused`].
#[derive(Debug)]
pub(super) struct Refusal {
    pub(super) code: RefusalCode,
    pub(super) rule: String,
    pub(super) reason: String,
}

impl Refusal {
    pub(super) fn new(code: RefusalCode, rule: impl Into<String>, reason: impl Into<String>) -> Refusal {
        Refusal { code, rule: rule.into(), reason: reason.into() }
    }

    pub(super) fn outcome(self) -> Outcome {
        refused(self.code, self.rule, self.reason)
    }
}

/// The kind of refusal a [`Rejection`] is.
pub(super) fn code_of(r: &Rejection) -> RefusalCode {
    match r {
        Rejection::Symbol { .. } => RefusalCode::Symbol,
        Rejection::Precision { .. } | Rejection::Filter { .. } => RefusalCode::Filter,
    }
}

/// The kind of refusal a strategy limit is.
pub(super) fn limit_code(l: crate::limits::Limit) -> RefusalCode {
    use crate::limits::Limit;
    match l {
        Limit::OpenOrders => RefusalCode::MaxOpenOrders,
        Limit::OrderRate => RefusalCode::OrderRate,
        Limit::OrderNotional => RefusalCode::OrderNotional,
        Limit::SymbolNotional => RefusalCode::SymbolNotional,
    }
}

/// The filter name, or a short word, for a [`Rejection`].
pub(super) fn rule_of(r: &Rejection) -> String {
    match r {
        Rejection::Precision { .. } => "precision".into(),
        Rejection::Filter { filter, .. } => filter.clone(),
        Rejection::Symbol { .. } => "symbol".into(),
    }
}

pub(super) fn is_taker_rejection(code: i64, msg: &str) -> bool {
    code == -2010 && msg.contains("immediately match")
}

/// A status after which an order never changes again.
pub(super) fn is_terminal(status: &str) -> bool {
    matches!(status, "FILLED" | "CANCELED" | "EXPIRED" | "REJECTED" | "EXPIRED_IN_MATCH")
}

pub(super) enum CancelResult {
    Done(Canceled),
    Failed(Outcome),
    Unknown,
    /// The key was refused: the daemon must stop.
    Fatal(KeyRefused),
}

/// What an order's end means for a cancel of it: cancelled, or it ended otherwise first (what
/// the exchange answers a cancel of an order that is not open).
pub(super) fn cancel_outcome(symbol: &str, order_id: u64, client_id: &str, status: &str) -> Outcome {
    match status {
        "CANCELED" => {
            Outcome::Canceled(Canceled { symbol: symbol.to_string(), order_id, client_order_id: client_id.to_string() })
        }
        other => Outcome::Rejected {
            code: -2011,
            msg: format!("Unknown order sent. (the order is {other}; nothing was cancelled)"),
            taker: false,
            canceled: None,
        },
    }
}

/// The order that goes out for a prepared intent: always LIMIT_MAKER (see `Desk::place`).
fn maker_order<'a>(symbol: &'a str, side: Side, prepared: &PreparedOrder, client_id: &'a str) -> MakerOrder<'a> {
    MakerOrder { symbol, side, price: prepared.price, quantity: prepared.quantity, client_order_id: client_id }
}

pub(super) fn placed_from(
    reply: &OrderReply,
    side: Side,
    prepared: PreparedOrder,
    adjustments: Vec<Adjustment>,
) -> Placed {
    Placed {
        symbol: reply.symbol.clone(),
        order_id: reply.order_id,
        client_order_id: reply.order_client_id().to_string(),
        side,
        price: prepared.price,
        qty: prepared.quantity,
        status: reply.status.clone().unwrap_or_else(|| "NEW".into()),
        adjustments,
    }
}

impl Executor {
    /// Rounds and checks a new order; `replacing` is the order the same request cancels.
    pub(super) fn prepare(
        &mut self,
        tag: &str,
        symbol: &str,
        side: Side,
        price: Decimal,
        qty: Decimal,
        replacing: Option<&OpenOrder>,
    ) -> Result<(PreparedOrder, Vec<Adjustment>), Refusal> {
        let rules = self.rules.snapshot();
        let Some(sym) = rules.symbols.get(symbol).filter(|_| self.settings.symbols.iter().any(|s| s == symbol)) else {
            return Err(Refusal::new(RefusalCode::Symbol, "symbol", format!("{symbol} is not one of SYNCD_SYMBOLS")));
        };
        let exchange_filters = rules.exchange_filters.clone();
        let needs_avg = sym.filters.iter().any(|f| {
            matches!(f, crate::filters::Filter::PercentPrice { .. } | crate::filters::Filter::PercentPriceBySide { .. })
        });
        let fresh_enough = self.settings.avg_price_poll.saturating_mul(3);
        if needs_avg && self.avg.get(symbol).is_none_or(|(_, at)| at.elapsed() > fresh_enough) {
            self.read_avg(symbol);
        }
        let mut ctx = self.context(sym, symbol, replacing);
        let mut prepared = sym.prepare_maker(side, price, qty, &ctx, &exchange_filters);
        // The exchange checks against its average at arrival, which may have moved since our
        // read: an order this close to a band's edge is checked again with a fresh one.
        if needs_avg && prepared.is_ok() && self.near_band_edge(sym, side, price, qty, &ctx, &exchange_filters) {
            let stale = self.avg.get(symbol).is_none_or(|(_, at)| at.elapsed() > Duration::from_millis(500));
            if stale {
                self.read_avg(symbol);
                ctx = self.context(sym, symbol, replacing);
                prepared = sym.prepare_maker(side, price, qty, &ctx, &exchange_filters);
            }
        }
        let prepared = prepared.map_err(|r| Refusal::new(code_of(&r), rule_of(&r), r.to_string()))?;
        // The market stream's touch as of now, not as of the last timer.
        self.stream_quote(symbol);
        if let Some(q) = self.quotes.get(symbol) {
            let crosses = match side {
                Side::Buy => prepared.price >= q.ask,
                Side::Sell => prepared.price <= q.bid,
            };
            if crosses {
                let (name, touch) = if side == Side::Buy { ("ask", q.ask) } else { ("bid", q.bid) };
                return Err(Refusal::new(
                    RefusalCode::CrossesBook,
                    "crosses book",
                    format!("{side} at {} would cross the best {name} {touch} and take", prepared.price),
                ));
            }
        }
        let notional = prepared.price.checked_mul(prepared.quantity).unwrap_or(Decimal::ZERO);
        let usage = self.usage(tag, symbol);
        let recent = self.rate.count(tag, Instant::now());
        self.settings
            .limits
            .check(tag, notional, usage, recent, replacing.map(OpenOrder::notional))
            .map_err(|o| Refusal::new(limit_code(o.kind), o.limit, o.reason))?;
        if self.balances.known() {
            let (asset, need) = match side {
                Side::Buy => (&sym.quote_asset, notional),
                Side::Sell => (&sym.base_asset, prepared.quantity),
            };
            // What the replaced order holds comes back to free in the same request.
            let freed = replacing.filter(|o| o.side == side).map_or(Decimal::ZERO, |o| match side {
                Side::Buy => o.notional(),
                Side::Sell => o.remaining(),
            });
            let free = self.balances.free(asset).checked_add(freed).unwrap_or(Decimal::ZERO);
            if need > free {
                return Err(Refusal::new(
                    RefusalCode::Balance,
                    "balance",
                    format!("needs {need} {asset}; {free} {asset} is free"),
                ));
            }
        }
        let mut adjustments = Vec::new();
        if prepared.price != price {
            let why = if side == Side::Buy {
                "rounded down to the tick (passive)"
            } else {
                "rounded up to the tick (passive)"
            };
            adjustments.push(Adjustment { field: "price", asked: price, sent: prepared.price, why: why.into() });
        }
        if prepared.quantity != qty {
            let why = "rounded down to the step".to_string();
            adjustments.push(Adjustment { field: "qty", asked: qty, sent: prepared.quantity, why });
        }
        Ok((prepared, adjustments))
    }

    pub(super) fn usage(&self, tag: &str, symbol: &str) -> Usage {
        let mine = |o: &&OpenOrder| self.ids.tag_of(&o.client_order_id) == Some(tag);
        // Unknown and unresolved requests count as open until they are known.
        let (mut unresolved, mut unresolved_notional) = (0, Decimal::ZERO);
        for p in self.pending.iter().filter(|p| p.tag == tag) {
            let (count, notional) = p.extra_open(&self.book);
            unresolved += count;
            if p.symbol == symbol {
                unresolved_notional = unresolved_notional.checked_add(notional).unwrap_or(unresolved_notional);
            }
        }
        // One pass, each order's tag read once: this runs for every intent, over every open order.
        let mut usage = Usage { open_orders: unresolved, symbol_notional: unresolved_notional };
        for o in self.book.orders().filter(mine) {
            usage.open_orders += 1;
            if o.symbol == symbol {
                usage.symbol_notional =
                    usage.symbol_notional.checked_add(o.notional()).unwrap_or(usage.symbol_notional);
            }
        }
        usage
    }

    pub(super) fn reserve(&mut self, client_id: &str, symbol: &str, side: Side, price: Decimal, qty: Decimal) {
        let rules = self.rules.snapshot();
        let Some(sym) = rules.symbols.get(symbol) else { return };
        match side {
            Side::Buy => {
                self.balances.reserve(client_id, &sym.quote_asset, price.checked_mul(qty).unwrap_or(Decimal::ZERO))
            }
            Side::Sell => self.balances.reserve(client_id, &sym.base_asset, qty),
        }
    }

    /// The exchange said no. Returns the outcome, after noting what the code means for us.
    pub(super) fn rejected(&mut self, symbol: &str, code: i64, msg: String, canceled: Option<Canceled>) -> Outcome {
        if matches!(code, -1013 | -1111) || msg.contains("-1013") || msg.contains("-1111") {
            log::warn!(
                "executor: {symbol}: the exchange refused an order we checked ({code} {msg}); re-reading the rules"
            );
            self.rules.mark_stale();
            if msg.contains("MAX_NUM_ORDERS") {
                // Our count of open orders was wrong, not the rules: recount from REST.
                self.need_rebuild = true;
                self.next_rebuild_try = Instant::now();
            }
        }
        let taker = is_taker_rejection(code, &msg) || msg.contains("-2010 Order would immediately match");
        Outcome::Rejected { code, msg, taker, canceled }
    }

    /// `Ok(None)`: the intent went back to its queue (a 429 met it) or is pending.
    pub(super) fn place(
        &mut self,
        req: &Request,
        requeues: u32,
        symbol: &str,
        side: Side,
        price: Decimal,
        qty: Decimal,
    ) -> Result<Option<Outcome>, KeyRefused> {
        let (prepared, adjustments) = match self.prepare(&req.tag, symbol, side, price, qty, None) {
            Ok(p) => p,
            Err(refusal) => return Ok(Some(refusal.outcome())),
        };
        let client_id = self.ids.next(&req.tag);
        let order = maker_order(symbol, side, &prepared, &client_id);
        self.rate.record(&req.tag, Instant::now());
        match self.desk.place(&order) {
            Ok(reply) => {
                self.book.apply_reply(&reply);
                self.reserve(&client_id, symbol, side, prepared.price, prepared.quantity);
                Ok(Some(Outcome::Placed(placed_from(&reply, side, prepared, adjustments))))
            }
            Err(Error::OutcomeUnknown(what)) | Err(Error::Decode(what)) => {
                log::warn!("executor: {symbol} {client_id}: {what}; looking the order up before anything else");
                self.reserve(&client_id, symbol, side, prepared.price, prepared.quantity);
                let new = NewOrder { side, price: prepared.price, qty: prepared.quantity, adjustments };
                self.add_pending(req, symbol, client_id.clone(), PendingKind::Place(new));
                Ok(Some(Outcome::Unknown { client_order_id: client_id }))
            }
            Err(e) if e.is_auth_failure() => Err(KeyRefused::by(&e)),
            Err(Error::Api { code, msg, .. }) => Ok(Some(self.rejected(symbol, code, msg, None))),
            Err(e @ (Error::RateLimited { .. } | Error::Banned { .. })) => {
                // Not processed; the gate now holds every thread. Back to the front of its
                // queue, to wait there like any other order.
                if requeues < MAX_REQUEUES {
                    log::info!("executor: {symbol} {client_id}: {e}; waiting for the rate gate");
                    self.requeue(req, requeues + 1);
                    return Ok(None);
                }
                Ok(Some(Outcome::Rejected { code: -1003, msg: e.to_string(), taker: false, canceled: None }))
            }
            Err(e @ Error::Transport(_)) => {
                Ok(Some(Outcome::NotDone { client_order_id: client_id, reason: format!("not sent: {e}") }))
            }
            Err(e @ (Error::Stopped | Error::Config(_) | Error::Io { .. } | Error::Internal(_))) => {
                Ok(Some(refused(RefusalCode::NotSent, "not sent", e.to_string())))
            }
        }
    }

    pub(super) fn requeue(&mut self, req: &Request, requeues: u32) {
        let copy = Request {
            id: req.id,
            tag: req.tag.clone(),
            intent: req.intent.clone(),
            reply: req.reply.clone(),
            submitted: req.submitted,
            revoked: req.revoked.clone(),
        };
        self.queues.entry(req.tag.clone()).or_default().push_front((copy, requeues));
    }

    /// One of the strategy's open orders, or why not.
    pub(super) fn own_order(&self, tag: &str, symbol: &str, order: &OrderRef) -> Result<OpenOrder, Refusal> {
        let found = match order {
            OrderRef::Id(id) => self.book.get(symbol, *id),
            OrderRef::ClientId(c) => self.book.by_client_id(symbol, c),
        };
        let Some(o) = found else {
            return Err(Refusal::new(
                RefusalCode::UnknownOrder,
                "unknown order",
                format!("no open order {order:?} on {symbol}"),
            ));
        };
        if self.ids.tag_of(&o.client_order_id) != Some(tag) {
            return Err(Refusal::new(
                RefusalCode::NotItsOrder,
                "not its order",
                format!("order {} on {symbol} is not strategy {tag}'s ({})", o.order_id, o.client_order_id),
            ));
        }
        Ok(o.clone())
    }

    pub(super) fn cancel(
        &mut self,
        req: &Request,
        symbol: &str,
        order: &OrderRef,
    ) -> Result<Option<Outcome>, KeyRefused> {
        let o = match self.own_order(&req.tag, symbol, order) {
            Ok(o) => o,
            Err(refusal) => return Ok(Some(refusal.outcome())),
        };
        match self.cancel_one(&req.tag, &o) {
            CancelResult::Done(c) => Ok(Some(Outcome::Canceled(c))),
            CancelResult::Failed(outcome) => Ok(Some(outcome)),
            CancelResult::Fatal(why) => Err(why),
            CancelResult::Unknown => {
                self.add_pending(req, symbol, o.client_order_id.clone(), PendingKind::Cancel { order_id: o.order_id });
                Ok(Some(Outcome::Unknown { client_order_id: o.client_order_id }))
            }
        }
    }

    pub(super) fn cancel_one(&mut self, tag: &str, o: &OpenOrder) -> CancelResult {
        let cancel_id = self.ids.next(tag);
        match self.desk.cancel(&o.symbol, &OrderRef::Id(o.order_id), &cancel_id, None) {
            Ok(_) => {
                self.book.close(&o.symbol, o.order_id);
                CancelResult::Done(Canceled {
                    symbol: o.symbol.clone(),
                    order_id: o.order_id,
                    client_order_id: o.client_order_id.clone(),
                })
            }
            Err(Error::OutcomeUnknown(what)) | Err(Error::Decode(what)) => {
                log::warn!("executor: cancel of {} {}: {what}; looking the order up", o.symbol, o.client_order_id);
                CancelResult::Unknown
            }
            Err(Error::Api { code: -2011, msg, .. }) => {
                // Not open any more: ask how it ended (filled, or cancelled by someone else).
                match self.desk.query(&o.symbol, &OrderRef::Id(o.order_id)) {
                    Ok(found) => {
                        self.book.apply_reply(&found);
                        let status = found.status.unwrap_or_default();
                        if !is_terminal(&status) {
                            // Open after all (a cancel restriction?): say what the exchange said.
                            return CancelResult::Failed(self.rejected(&o.symbol, -2011, msg, None));
                        }
                        self.book.close(&o.symbol, o.order_id);
                        CancelResult::Failed(cancel_outcome(&o.symbol, o.order_id, &o.client_order_id, &status))
                    }
                    Err(_) => {
                        self.book.close(&o.symbol, o.order_id);
                        CancelResult::Failed(self.rejected(&o.symbol, -2011, msg, None))
                    }
                }
            }
            Err(e) if e.is_auth_failure() => CancelResult::Fatal(KeyRefused::by(&e)),
            Err(Error::Api { code, msg, .. }) => CancelResult::Failed(self.rejected(&o.symbol, code, msg, None)),
            Err(e) => CancelResult::Failed(refused(RefusalCode::NotSent, "not sent", e.to_string())),
        }
    }

    pub(super) fn cancel_all(&mut self, req: &Request, symbol: &str) -> Result<Option<Outcome>, KeyRefused> {
        let own: Vec<OpenOrder> = self
            .book
            .orders()
            .filter(|o| o.symbol == symbol && self.ids.tag_of(&o.client_order_id) == Some(req.tag.as_str()))
            .cloned()
            .collect();
        let (mut canceled, mut failed) = (Vec::new(), Vec::new());
        for o in own {
            match self.cancel_one(&req.tag, &o) {
                CancelResult::Done(c) => canceled.push(c),
                CancelResult::Failed(outcome) => failed.push((o.order_id, format!("{outcome:?}"))),
                CancelResult::Fatal(why) => return Err(why),
                CancelResult::Unknown => {
                    failed.push((o.order_id, "outcome unknown; being looked up".into()));
                    let what = PendingKind::Cancel { order_id: o.order_id };
                    let sent_ms = self.desk.rest().clock().now_ms();
                    self.pending.push(Pending::new(symbol, &req.tag, o.client_order_id.clone(), what, None, sent_ms));
                }
            }
        }
        Ok(Some(Outcome::CanceledAll { symbol: symbol.to_string(), canceled, failed }))
    }

    pub(super) fn replace(
        &mut self,
        req: &Request,
        symbol: &str,
        order: &OrderRef,
        side: Side,
        price: Decimal,
        qty: Decimal,
    ) -> Result<Option<Outcome>, KeyRefused> {
        let old = match self.own_order(&req.tag, symbol, order) {
            Ok(o) => o,
            Err(refusal) => return Ok(Some(refusal.outcome())),
        };
        let (prepared, adjustments) = match self.prepare(&req.tag, symbol, side, price, qty, Some(&old)) {
            Ok(p) => p,
            Err(refusal) => return Ok(Some(refusal.outcome())),
        };
        if !self.rules.snapshot().symbols.get(symbol).is_some_and(|r| r.cancel_replace_allowed) {
            return self.replace_in_two(req, symbol, old, side, price, qty);
        }
        let (client_id, cancel_id) = (self.ids.next(&req.tag), self.ids.next(&req.tag));
        let order = maker_order(symbol, side, &prepared, &client_id);
        self.rate.record(&req.tag, Instant::now());
        let canceled = Canceled {
            symbol: symbol.to_string(),
            order_id: old.order_id,
            client_order_id: old.client_order_id.clone(),
        };
        match self.desk.cancel_replace(&OrderRef::Id(old.order_id), &order, &cancel_id) {
            Ok(r) => {
                self.book.close(symbol, old.order_id);
                self.book.apply_reply(&r.new_order_response);
                self.reserve(&client_id, symbol, side, prepared.price, prepared.quantity);
                let placed = placed_from(&r.new_order_response, side, prepared, adjustments);
                Ok(Some(Outcome::Replaced { canceled, placed }))
            }
            Err(Error::Api { code: -2021, msg, .. }) => {
                // STOP_ON_FAILURE: the cancel went through and the new order did not.
                self.book.close(symbol, old.order_id);
                Ok(Some(self.rejected(symbol, -2021, msg, Some(canceled))))
            }
            Err(Error::Api { code, msg, .. }) => {
                if code == -2022 && msg.contains("-2011") {
                    self.book.close(symbol, old.order_id);
                }
                Ok(Some(self.rejected(symbol, code, msg, None)))
            }
            Err(Error::OutcomeUnknown(what)) | Err(Error::Decode(what)) => {
                log::warn!("executor: replace on {symbol} ({client_id}): {what}; looking both orders up");
                // The old order stays in the book (and counts) until the lookups say otherwise.
                let new = NewOrder { side, price: prepared.price, qty: prepared.quantity, adjustments };
                self.add_pending(req, symbol, client_id.clone(), PendingKind::Replace { old, new });
                Ok(Some(Outcome::Unknown { client_order_id: client_id }))
            }
            Err(e @ (Error::RateLimited { .. } | Error::Banned { .. })) => {
                Ok(Some(Outcome::Rejected { code: -1003, msg: e.to_string(), taker: false, canceled: None }))
            }
            Err(e) => Ok(Some(Outcome::NotDone { client_order_id: client_id, reason: format!("not sent: {e}") })),
        }
    }

    /// A replace where the symbol takes no `cancelReplace`: the cancel, then (only once it is
    /// known to be done) the new order, already checked against the rules by the caller.
    pub(super) fn replace_in_two(
        &mut self,
        req: &Request,
        symbol: &str,
        old: OpenOrder,
        side: Side,
        price: Decimal,
        qty: Decimal,
    ) -> Result<Option<Outcome>, KeyRefused> {
        let canceled = match self.cancel_one(&req.tag, &old) {
            CancelResult::Done(c) => c,
            CancelResult::Failed(outcome) => return Ok(Some(outcome)),
            CancelResult::Fatal(why) => return Err(why),
            CancelResult::Unknown => {
                let kind = PendingKind::Cancel { order_id: old.order_id };
                self.add_pending(req, symbol, old.client_order_id.clone(), kind);
                return Ok(Some(Outcome::Unknown { client_order_id: old.client_order_id }));
            }
        };
        // Never requeued (the most requeues already): the cancel is done, so running this
        // request again would look for an order that is gone.
        Ok(match self.place(req, MAX_REQUEUES, symbol, side, price, qty)? {
            Some(Outcome::Placed(placed)) => Some(Outcome::Replaced { canceled, placed }),
            Some(Outcome::Rejected { code, msg, taker, canceled: None }) => {
                Some(Outcome::Rejected { code, msg, taker, canceled: Some(canceled) })
            }
            other => other,
        })
    }
}
