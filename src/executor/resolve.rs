//! Unknown outcomes: what the executor does when an order request may or may not have taken
//! effect (5xx, `-1006`/`-1007`, a timeout or a reset after sending), until it knows.
//!
//! 1. The order is looked up by what names it for sure: a placement's (or a replace's) new
//!    order by its client id, a cancel's order by its order id (`GET /api/v3/order`), at 0.3,
//!    0.7, 1.5 and 3 s: that path lags behind the engine, so a `-2013` right after the send can
//!    mean "not visible yet". A stream report of it settles it at once; the stream's silence
//!    settles nothing.
//! 2. Still not found: every order of the symbol since a little before the send is searched
//!    (`GET /api/v3/allOrders`, which lists filled and cancelled orders too). A filled or
//!    cancelled order's client id may be taken again, so sending again without this step could
//!    make a second order.
//! 3. A replace looks its old order up too, by order id: still open means the request did
//!    nothing; cancelled means it did half; filled means it could not have done anything.
//! 4. Only then is it sent again, once, exactly as before: a placement with the same client id
//!    (if the first is open after all, the exchange refuses the copy with `-2010 Duplicate order
//!    sent.`), a replace as the same `cancelReplace` of the same old order id (`STOP_ON_FAILURE`:
//!    an order can be cancelled once only, so two such requests can never place two orders), a
//!    cancel as the same cancel (a cancel is idempotent).
//! 5. When that does not settle it, or the exchange cannot be asked for `RESOLVE_GIVE_UP`, the
//!    intent is answered [`Outcome::Unresolved`] (never `NotDone`, which says the exchange never
//!    got it): the symbol is free again, the order counts as open against the strategy's limits,
//!    and it is looked up now and then until it is known: found, or still absent long after no
//!    request could reach the engine any more (`recvWindow` is at most 60 s).
//!
//! Binance.US REST API, "Query order", "All orders" and error codes `-2010`/`-2013`:
//! <https://docs.binance.us/#query-order-user_data>, <https://docs.binance.us/#all-orders-user_data>.

use super::{cancel_outcome, is_terminal, Executor, KeyRefused, OpenOrder};
use crate::decimal::Decimal;
use crate::error::Error;
use crate::executor::intent::{Adjustment, Canceled, Outcome, Placed, Reply, Request};
use crate::executor::Book;
use crate::model::Side;
use crate::rest::desk::{Listed, MakerOrder, OrderRef};
use crate::wire::OrderReply;
use crossbeam_channel::Sender;
use std::time::{Duration, Instant};

/// Pauses between the lookups of an unknown order (the Memory ⇒ Database path can lag).
const RESOLVE_DELAYS: [Duration; 4] =
    [Duration::from_millis(300), Duration::from_millis(700), Duration::from_millis(1500), Duration::from_secs(3)];
/// How long an unknown outcome may hold its symbol while the exchange cannot be asked.
const RESOLVE_GIVE_UP: Duration = Duration::from_secs(120);
/// How often an unresolved order is looked up once it no longer holds its symbol.
const LOOK_LATER: Duration = Duration::from_secs(10);
/// Absent this long after its last send, an order is known never to have been made: no
/// request older than its `recvWindow` (at most 60 s) reaches the engine, and the lookups'
/// lag is seconds.
const GONE_AFTER: Duration = Duration::from_secs(180);
/// `allOrders` is searched from this long before the send (our estimate of the server's clock
/// may be off a little).
const LISTED_MARGIN_MS: i64 = 60_000;
/// Beyond `recvWindow` after a send, before the same request goes again: by then the exchange
/// refuses the first one if it was only delayed on the way (our clock against the server's may
/// be off by this much), so it cannot arrive after the resend and place a second order.
const RESEND_MARGIN: Duration = Duration::from_secs(2);

/// A new order as it was sent (after rounding).
#[derive(Debug, Clone)]
pub(super) struct NewOrder {
    pub side: Side,
    pub price: Decimal,
    pub qty: Decimal,
    pub adjustments: Vec<Adjustment>,
}

#[derive(Debug)]
pub(super) enum PendingKind {
    Place(NewOrder),
    Cancel {
        order_id: u64,
    },
    /// A `cancelReplace` of `old` by `new` (whose client id is the pending's `lookup_id`).
    Replace {
        old: OpenOrder,
        new: NewOrder,
    },
}

impl PendingKind {
    fn kind(&self) -> Kind {
        match self {
            PendingKind::Place(_) => Kind::Place,
            PendingKind::Cancel { .. } => Kind::Cancel,
            PendingKind::Replace { .. } => Kind::Replace,
        }
    }

    /// The new order it may have made, and the order a replace cancels.
    pub(super) fn new_order(&self) -> Option<(&NewOrder, Option<&OpenOrder>)> {
        match self {
            PendingKind::Place(new) => Some((new, None)),
            PendingKind::Replace { old, new } => Some((new, Some(old))),
            PendingKind::Cancel { .. } => None,
        }
    }
}

/// An order, cancel or replace whose outcome is not known yet.
#[derive(Debug)]
pub(super) struct Pending {
    pub symbol: String,
    pub tag: String,
    /// The client id it is known by: the new order's, or for a cancel the order's own.
    pub lookup_id: String,
    pub what: PendingKind,
    pub reply: Option<(u64, Sender<Reply>, Instant)>,
    tries: usize,
    pub next_try: Instant,
    /// When it became unknown: after `RESOLVE_GIVE_UP` of lookups it is given up.
    since: Instant,
    /// Sent a second time already (never a third).
    resent: bool,
    /// Server time of the last send: `allOrders` is searched from a little before it.
    sent_ms: i64,
    /// Local time of the last send.
    sent_at: Instant,
    /// Answered `Unresolved`: it no longer holds its symbol, but still counts as open and is
    /// looked up every `LOOK_LATER` until it is known.
    pub given_up: bool,
}

impl Pending {
    pub(super) fn new(
        symbol: &str,
        tag: &str,
        lookup_id: String,
        what: PendingKind,
        req: Option<&Request>,
        sent_ms: i64,
    ) -> Pending {
        let now = Instant::now();
        Pending {
            symbol: symbol.to_string(),
            tag: tag.to_string(),
            lookup_id,
            what,
            reply: req.map(|r| (r.id, r.reply.clone(), r.submitted)),
            tries: 0,
            next_try: now + RESOLVE_DELAYS[0],
            since: now,
            resent: false,
            sent_ms,
            sent_at: now,
            given_up: false,
        }
    }

    /// What it may add to the open orders the book holds: (orders, notional). A new order the
    /// book already holds is not counted twice, and a replace adds only what its new order
    /// exceeds the old one by while the book still holds the old: the two are never both live.
    pub(super) fn extra_open(&self, book: &Book) -> (u64, Decimal) {
        let Some((new, old)) = self.what.new_order() else { return (0, Decimal::ZERO) };
        if book.by_client_id(&self.symbol, &self.lookup_id).is_some() {
            return (0, Decimal::ZERO);
        }
        let notional = new.price.checked_mul(new.qty).unwrap_or(Decimal::ZERO);
        match old.and_then(|o| book.get(&self.symbol, o.order_id)) {
            Some(held) => (0, notional.checked_sub(held.notional()).unwrap_or(Decimal::ZERO).max(Decimal::ZERO)),
            None => (1, notional),
        }
    }

    /// How it is looked up.
    fn target(&self) -> OrderRef {
        match self.what {
            PendingKind::Cancel { order_id } => OrderRef::Id(order_id),
            _ => OrderRef::ClientId(self.lookup_id.clone()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Place,
    Cancel,
    Replace,
}

/// What the exchange says of one order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen<'a> {
    /// `-2013`, and (for a new order) not in `allOrders` either.
    Absent,
    Status(&'a str),
}

/// What to do once the lookups are over without finding the new order (or, for a cancel,
/// with the order still open or gone).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Next {
    /// Send the same request again.
    Resend,
    /// Known: the request did nothing.
    NotDone(String),
    /// Known: the request could not do what it asked, as the exchange would have answered.
    /// `old_canceled`: a replace's old order is cancelled.
    Rejected { code: i64, msg: String, old_canceled: bool },
    /// Not known, and asking more will not tell: answer `Unresolved`.
    GiveUp(String),
}

/// The decision at the end of the lookups. `order`: the order looked up (the new one of a
/// placement or replace: `Absent` by client id and in `allOrders`; a cancel's own order: open,
/// or `Absent`); `old`: a replace's old order, by order id.
fn after_lookups(kind: Kind, order: Seen<'_>, old: Seen<'_>, resent: bool) -> Next {
    let once = |why: &str| if resent { Next::GiveUp(why.to_string()) } else { Next::Resend };
    match kind {
        Kind::Place => once("sent twice, both answers lost; no lookup finds it"),
        Kind::Replace => match old {
            Seen::Status(s) if !is_terminal(s) => once("sent twice, both answers lost; the old order is still open"),
            Seen::Status("CANCELED") => Next::Rejected {
                code: -2021,
                msg: "the old order is cancelled and the new one is not on the exchange".into(),
                old_canceled: true,
            },
            Seen::Status(s) => Next::Rejected {
                code: -2022,
                msg: format!("the old order is {s}: nothing was cancelled, nothing placed"),
                old_canceled: false,
            },
            Seen::Absent => Next::GiveUp("the exchange does not know the old order".into()),
        },
        Kind::Cancel => match order {
            Seen::Status(s) if !is_terminal(s) && resent => {
                Next::NotDone(format!("the order is still {s} after two cancels"))
            }
            Seen::Status(s) if !is_terminal(s) => Next::Resend,
            Seen::Status(s) => Next::Rejected {
                code: -2011,
                msg: format!("Unknown order sent. (the order is {s})"),
                old_canceled: false,
            },
            Seen::Absent => Next::GiveUp("the exchange does not know the order".into()),
        },
    }
}

/// What a found new order (of a placement or a replace) means.
fn new_found(
    symbol: &str,
    client_id: &str,
    (new, old): (&NewOrder, Option<&OpenOrder>),
    order_id: u64,
    (price, qty): (Option<Decimal>, Option<Decimal>),
    status: &str,
) -> Outcome {
    let canceled = old.map(|o| Canceled {
        symbol: symbol.to_string(),
        order_id: o.order_id,
        client_order_id: o.client_order_id.clone(),
    });
    if status == "REJECTED" {
        let code = if canceled.is_some() { -2021 } else { -2010 };
        let msg = "the exchange has the new order as REJECTED".to_string();
        return Outcome::Rejected { code, msg, taker: false, canceled };
    }
    let placed = Placed {
        symbol: symbol.to_string(),
        order_id,
        client_order_id: client_id.to_string(),
        side: new.side,
        price: price.filter(|p| !p.is_zero()).unwrap_or(new.price),
        qty: qty.filter(|q| !q.is_zero()).unwrap_or(new.qty),
        status: status.to_string(),
        adjustments: new.adjustments.clone(),
    };
    match canceled {
        Some(canceled) => Outcome::Replaced { canceled, placed },
        None => Outcome::Placed(placed),
    }
}

/// What a second send came to.
enum Sent {
    Done(Outcome),
    /// Not settled by this answer: the lookups go on.
    LookAgain,
    Failed(Error),
}

/// Whether a failed send may have reached the exchange.
fn may_have_reached(e: &Error) -> bool {
    matches!(e, Error::OutcomeUnknown(_) | Error::Decode(_))
}

impl Executor {
    pub(super) fn add_pending(&mut self, req: &Request, symbol: &str, lookup_id: String, what: PendingKind) {
        let sent_ms = self.desk.rest().clock().now_ms();
        self.pending.push(Pending::new(symbol, &req.tag, lookup_id, what, Some(req), sent_ms));
        self.dirty = true;
    }

    /// A stream report may settle a pending request at once.
    pub(super) fn resolve_from_stream(&mut self, symbol: &str, order_id: u64, client_id: &str, status: &str) {
        let Some(i) = self.pending.iter().position(|p| {
            p.symbol == symbol
                && match p.what {
                    PendingKind::Place(_) | PendingKind::Replace { .. } => p.lookup_id == client_id,
                    // Only an end settles a cancel: a partial fill meanwhile says nothing of it.
                    PendingKind::Cancel { order_id: o } => o == order_id && is_terminal(status),
                }
        }) else {
            return;
        };
        let outcome = match self.pending[i].what.new_order() {
            Some(orders) => new_found(symbol, client_id, orders, order_id, (None, None), status),
            None => cancel_outcome(symbol, order_id, client_id, status),
        };
        let p = self.pending.remove(i);
        self.settle(p, outcome);
    }

    /// Answers a pending request (if it was not answered `Unresolved` already) and lets it go.
    fn settle(&mut self, p: Pending, outcome: Outcome) {
        log::info!("executor: {} {} resolved: {outcome:?}", p.symbol, p.lookup_id);
        match &outcome {
            Outcome::NotDone { .. } | Outcome::Rejected { .. } => self.balances.release(&p.lookup_id),
            _ => {}
        }
        // Under STOP_ON_FAILURE a new order exists only once the old is cancelled.
        if let (
            PendingKind::Replace { old, .. },
            Outcome::Replaced { .. } | Outcome::Rejected { canceled: Some(_), .. },
        ) = (&p.what, &outcome)
        {
            self.book.close(&old.symbol, old.order_id);
        }
        if !p.given_up {
            // A given-up one was counted when it was answered `Unresolved`.
            self.stats.resolved += 1;
        }
        self.dirty = true;
        if let Some((request, reply, submitted)) = p.reply {
            let _ = reply.send(Reply { request, outcome, waited: submitted.elapsed(), resolved: true });
        }
    }

    /// Looks up the pending request whose turn has come.
    pub(super) fn resolve_due(&mut self) -> Result<(), KeyRefused> {
        let now = Instant::now();
        let Some(i) = self.pending.iter().position(|p| p.next_try <= now) else { return Ok(()) };
        if self.pending[i].given_up {
            return self.look_later(i);
        }
        if self.pending[i].since.elapsed() > RESOLVE_GIVE_UP {
            self.give_up(i, format!("the exchange could not be asked for {RESOLVE_GIVE_UP:?}"));
            return Ok(());
        }
        let (symbol, target) = (self.pending[i].symbol.clone(), self.pending[i].target());
        match self.desk.query(&symbol, &target) {
            Ok(found) => self.on_found(i, &found),
            // Archived: cancelled or expired with nothing filled, long ago. An end.
            Err(e) if e.api_code() == Some(-2026) => self.on_status(i, None, "CANCELED"),
            Err(e) if e.api_code() == Some(-2013) => self.not_yet(i, Seen::Absent),
            Err(e) if e.is_auth_failure() => Err(KeyRefused::by(&e)),
            Err(e) => {
                // Could not ask (network, rate gate, an answer we could not read): again later,
                // until RESOLVE_GIVE_UP.
                log::warn!("executor: lookup of {symbol} {target:?} failed ({e}); retrying");
                self.pending[i].next_try = now + Duration::from_secs(1);
                Ok(())
            }
        }
    }

    fn on_found(&mut self, i: usize, found: &OrderReply) -> Result<(), KeyRefused> {
        self.book.apply_reply(found);
        let status = found.status.as_deref().unwrap_or("NEW");
        self.on_status(i, Some(found), status)
    }

    /// The exchange has the order, as `status`.
    fn on_status(&mut self, i: usize, found: Option<&OrderReply>, status: &str) -> Result<(), KeyRefused> {
        let p = &self.pending[i];
        let outcome = match (&p.what, p.what.new_order()) {
            (_, Some(orders)) => {
                let order_id = found.map_or(0, |f| f.order_id);
                let sent = (found.and_then(|f| f.price), found.and_then(|f| f.orig_qty));
                new_found(&p.symbol, &p.lookup_id, orders, order_id, sent, status)
            }
            (PendingKind::Cancel { order_id }, None) if is_terminal(status) => {
                self.book.close(&p.symbol, *order_id);
                cancel_outcome(&p.symbol, *order_id, &p.lookup_id, status)
            }
            // Still open: the cancel may not have arrived yet.
            _ => return self.not_yet(i, Seen::Status(status)),
        };
        let p = self.pending.remove(i);
        self.settle(p, outcome);
        Ok(())
    }

    /// Not settled by this lookup: again after the next pause, or the round is over.
    fn not_yet(&mut self, i: usize, seen: Seen<'_>) -> Result<(), KeyRefused> {
        let p = &mut self.pending[i];
        p.tries += 1;
        if p.tries < RESOLVE_DELAYS.len() {
            p.next_try = Instant::now() + RESOLVE_DELAYS[p.tries];
            return Ok(());
        }
        self.round_over(i, seen)
    }

    /// The lookups are over: the last checks, then the decision.
    fn round_over(&mut self, i: usize, seen: Seen<'_>) -> Result<(), KeyRefused> {
        let p = &self.pending[i];
        let (kind, symbol, lookup_id, resent) = (p.what.kind(), p.symbol.clone(), p.lookup_id.clone(), p.resent);
        let retry_soon = |ex: &mut Executor, what: &str, e: &Error| {
            log::warn!("executor: {symbol} {lookup_id}: {what} failed ({e}); retrying");
            ex.pending[i].next_try = Instant::now() + Duration::from_secs(1);
        };
        let mut old_status = None;
        if kind != Kind::Cancel {
            // Not by id, but every order since a little before the send, filled and cancelled
            // ones too: a client id whose order ended may be taken again.
            match self.desk.find_listed(&symbol, &lookup_id, p.sent_ms.saturating_sub(LISTED_MARGIN_MS)) {
                Ok(Listed::Found(o)) => return self.on_found(i, &o),
                Ok(Listed::Absent) => {}
                Ok(Listed::TooMany) => {
                    self.give_up(i, "too many orders since it was sent to search them all".into());
                    return Ok(());
                }
                Err(e) if e.is_auth_failure() => return Err(KeyRefused::by(&e)),
                Err(e) => {
                    retry_soon(self, "allOrders", &e);
                    return Ok(());
                }
            }
        }
        if let PendingKind::Replace { old, .. } = &self.pending[i].what {
            match self.desk.query(&symbol, &OrderRef::Id(old.order_id)) {
                Ok(o) => {
                    self.book.apply_reply(&o);
                    old_status = Some(o.status.unwrap_or_default());
                }
                Err(e) if e.api_code() == Some(-2013) => {}
                Err(e) if e.api_code() == Some(-2026) => old_status = Some("CANCELED".to_string()),
                Err(e) if e.is_auth_failure() => return Err(KeyRefused::by(&e)),
                Err(e) => {
                    retry_soon(self, "the old order's lookup", &e);
                    return Ok(());
                }
            }
        }
        let old = old_status.as_deref().map_or(Seen::Absent, Seen::Status);
        match after_lookups(kind, seen, old, resent) {
            Next::Resend => {
                // A request delayed on the way (queued after a -1007) may still reach the
                // engine until its recvWindow has passed: resend only after that, looking again.
                let safe_at = self.pending[i].sent_at + self.desk.rest().recv_window() + RESEND_MARGIN;
                let now = Instant::now();
                if now < safe_at {
                    self.pending[i].next_try = safe_at;
                    return Ok(());
                }
                self.resend(i)
            }
            Next::NotDone(reason) => {
                let p = self.pending.remove(i);
                self.settle(p, Outcome::NotDone { client_order_id: lookup_id, reason });
                Ok(())
            }
            Next::Rejected { code, msg, old_canceled } => {
                let p = self.pending.remove(i);
                let canceled = match (&p.what, old_canceled) {
                    (PendingKind::Replace { old, .. }, true) => Some(Canceled {
                        symbol: symbol.clone(),
                        order_id: old.order_id,
                        client_order_id: old.client_order_id.clone(),
                    }),
                    _ => None,
                };
                let outcome = self.rejected(&symbol, code, msg, canceled);
                self.settle(p, outcome);
                Ok(())
            }
            Next::GiveUp(why) => {
                self.give_up(i, why);
                Ok(())
            }
        }
    }

    /// The lookups say it did not happen: the same request once more (see the module doc).
    fn resend(&mut self, i: usize) -> Result<(), KeyRefused> {
        let now = Instant::now();
        let sent_ms = self.desk.rest().clock().now_ms();
        let p = &mut self.pending[i];
        (p.resent, p.tries, p.next_try, p.sent_ms, p.sent_at) = (true, 0, now + RESOLVE_DELAYS[0], sent_ms, now);
        let (symbol, tag, client_id) = (p.symbol.clone(), p.tag.clone(), p.lookup_id.clone());
        log::warn!(
            "executor: {symbol} {client_id}: not on the exchange after every lookup; sending it again as it was"
        );
        let maker = |new: &NewOrder| MakerOrder {
            symbol: &symbol,
            side: new.side,
            price: new.price,
            quantity: new.qty,
            client_order_id: &client_id,
        };
        let found = |orders, reply: &OrderReply| {
            let status = reply.status.as_deref().unwrap_or("NEW");
            new_found(&symbol, &client_id, orders, reply.order_id, (reply.price, reply.orig_qty), status)
        };
        let sent = match &self.pending[i].what {
            PendingKind::Place(new) => {
                self.rate.record(&tag, now);
                match self.desk.place(&maker(new)) {
                    Ok(reply) => {
                        self.book.apply_reply(&reply);
                        Sent::Done(found((new, None), &reply))
                    }
                    // It exists and is open after all: the next lookup finds it.
                    Err(Error::Api { code: -2010, msg, .. }) if msg.contains("Duplicate") => Sent::LookAgain,
                    Err(e) => Sent::Failed(e),
                }
            }
            PendingKind::Replace { old, new } => {
                let cancel_id = self.ids.next(&tag);
                self.rate.record(&tag, now);
                match self.desk.cancel_replace(&OrderRef::Id(old.order_id), &maker(new), &cancel_id) {
                    Ok(r) => {
                        self.book.apply_reply(&r.new_order_response);
                        Sent::Done(found((new, Some(old)), &r.new_order_response))
                    }
                    // The old order is not open: the first request may have replaced it.
                    Err(Error::Api { code: -2022, .. }) => Sent::LookAgain,
                    Err(Error::Api { code: -2021, msg, .. }) => {
                        let canceled = Canceled {
                            symbol: symbol.clone(),
                            order_id: old.order_id,
                            client_order_id: old.client_order_id.clone(),
                        };
                        Sent::Done(Outcome::Rejected { code: -2021, msg, taker: false, canceled: Some(canceled) })
                    }
                    Err(e) => Sent::Failed(e),
                }
            }
            PendingKind::Cancel { order_id } => {
                let (order_id, cancel_id) = (*order_id, self.ids.next(&tag));
                match self.desk.cancel(&symbol, &OrderRef::Id(order_id), &cancel_id, None) {
                    Ok(_) => {
                        self.book.close(&symbol, order_id);
                        let c = Canceled { symbol: symbol.clone(), order_id, client_order_id: client_id.clone() };
                        Sent::Done(Outcome::Canceled(c))
                    }
                    // Not open any more: the next lookup says how it ended.
                    Err(Error::Api { code: -2011, .. }) => Sent::LookAgain,
                    Err(e) => Sent::Failed(e),
                }
            }
        };
        let outcome = match sent {
            Sent::Done(outcome) => outcome,
            Sent::LookAgain => return Ok(()),
            Sent::Failed(e) if e.is_auth_failure() => return Err(KeyRefused::by(&e)),
            Sent::Failed(Error::Api { code, msg, .. }) => self.rejected(&symbol, code, msg, None),
            Sent::Failed(e) if may_have_reached(&e) => {
                log::warn!("executor: {symbol} {client_id}: the second send: {e}; looking it up");
                return Ok(());
            }
            Sent::Failed(e) => {
                // Never left: it may go once the way is clear (the round ends again at once).
                log::warn!("executor: {symbol} {client_id}: the second send did not go ({e}); trying again");
                let p = &mut self.pending[i];
                (p.resent, p.tries, p.next_try) = (false, RESOLVE_DELAYS.len(), now + Duration::from_secs(1));
                return Ok(());
            }
        };
        let p = self.pending.remove(i);
        self.settle(p, outcome);
        Ok(())
    }

    /// Stops holding the symbol and answers `Unresolved`; the order still counts as open and is
    /// looked up every `LOOK_LATER` until it is known.
    fn give_up(&mut self, i: usize, why: String) {
        let p = &mut self.pending[i];
        log::error!("executor: {} {}: unresolved ({why}); it counts as open until it is known", p.symbol, p.lookup_id);
        (p.given_up, p.next_try) = (true, Instant::now() + LOOK_LATER);
        let outcome = Outcome::Unresolved { client_order_id: p.lookup_id.clone(), reason: why };
        if let Some((request, reply, submitted)) = p.reply.take() {
            let _ = reply.send(Reply { request, outcome, waited: submitted.elapsed(), resolved: true });
        }
        self.stats.resolved += 1;
        // The book shows it if it rests.
        self.need_rebuild = true;
        self.dirty = true;
    }

    /// An unresolved order's slow lookup: found, or known never made, it stops counting.
    fn look_later(&mut self, i: usize) -> Result<(), KeyRefused> {
        let (symbol, target) = (self.pending[i].symbol.clone(), self.pending[i].target());
        let found = match self.desk.query(&symbol, &target) {
            Ok(o) => Some(o),
            Err(e) if matches!(e.api_code(), Some(-2013 | -2026)) => None,
            Err(e) if e.is_auth_failure() => return Err(KeyRefused::by(&e)),
            Err(e) => {
                log::debug!("executor: lookup of unresolved {symbol} {target:?}: {e}");
                self.pending[i].next_try = Instant::now() + LOOK_LATER;
                return Ok(());
            }
        };
        let p = &self.pending[i];
        let found = match (found, &p.what) {
            (Some(o), _) => Some(o),
            (None, _) if p.sent_at.elapsed() < GONE_AFTER => {
                self.pending[i].next_try = Instant::now() + LOOK_LATER;
                return Ok(());
            }
            (None, PendingKind::Cancel { order_id }) => {
                // An order we saw that the exchange no longer knows: the rebuild settles the book.
                self.book.close(&symbol, *order_id);
                self.need_rebuild = true;
                None
            }
            (None, _) => match self.desk.find_listed(&symbol, &p.lookup_id, p.sent_ms.saturating_sub(LISTED_MARGIN_MS))
            {
                Ok(Listed::Found(o)) => Some(*o),
                // Absent long after any request could still arrive; or past what one search
                // reads, where the by-id lookups (long past their lag) are all there is to go on.
                Ok(Listed::Absent | Listed::TooMany) => None,
                Err(e) => {
                    log::debug!("executor: allOrders for unresolved {symbol} {}: {e}", p.lookup_id);
                    self.pending[i].next_try = Instant::now() + LOOK_LATER;
                    return Ok(());
                }
            },
        };
        let p = self.pending.remove(i);
        match &found {
            Some(o) => {
                self.book.apply_reply(o);
                if let PendingKind::Replace { old, .. } = &p.what {
                    self.book.close(&symbol, old.order_id);
                }
                log::info!("executor: unresolved {symbol} {} is known now: {:?}", p.lookup_id, o.status);
            }
            None => {
                self.balances.release(&p.lookup_id);
                log::info!("executor: unresolved {symbol} {} is known never to have been made", p.lookup_id);
            }
        }
        self.dirty = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn a_placement_is_sent_again_once_and_then_given_up() {
        assert_eq!(after_lookups(Kind::Place, Seen::Absent, Seen::Absent, false), Next::Resend);
        assert!(matches!(after_lookups(Kind::Place, Seen::Absent, Seen::Absent, true), Next::GiveUp(_)));
    }

    #[test]
    fn a_replace_is_decided_by_its_old_order() {
        let open = Seen::Status("NEW");
        assert_eq!(after_lookups(Kind::Replace, Seen::Absent, open, false), Next::Resend);
        assert_eq!(after_lookups(Kind::Replace, Seen::Absent, Seen::Status("PARTIALLY_FILLED"), false), Next::Resend);
        assert!(matches!(after_lookups(Kind::Replace, Seen::Absent, open, true), Next::GiveUp(_)));
        // Half done: the old is gone, the new is not there.
        assert!(matches!(
            after_lookups(Kind::Replace, Seen::Absent, Seen::Status("CANCELED"), false),
            Next::Rejected { code: -2021, old_canceled: true, .. }
        ));
        // The old ended by itself: the cancel could not succeed, so nothing was placed.
        for end in ["FILLED", "EXPIRED"] {
            assert!(matches!(
                after_lookups(Kind::Replace, Seen::Absent, Seen::Status(end), true),
                Next::Rejected { code: -2022, old_canceled: false, .. }
            ));
        }
        assert!(matches!(after_lookups(Kind::Replace, Seen::Absent, Seen::Absent, false), Next::GiveUp(_)));
    }

    #[test]
    fn a_cancel_whose_order_stays_open_is_sent_again_and_only_then_not_done() {
        let open = Seen::Status("NEW");
        assert_eq!(after_lookups(Kind::Cancel, open, Seen::Absent, false), Next::Resend);
        assert!(matches!(after_lookups(Kind::Cancel, open, Seen::Absent, true), Next::NotDone(_)));
        assert!(matches!(
            after_lookups(Kind::Cancel, Seen::Status("FILLED"), Seen::Absent, false),
            Next::Rejected { code: -2011, .. }
        ));
        // An order we saw, unknown now: never "not done".
        assert!(matches!(after_lookups(Kind::Cancel, Seen::Absent, Seen::Absent, false), Next::GiveUp(_)));
    }

    fn new_order(price: &str, qty: &str) -> NewOrder {
        NewOrder { side: Side::Buy, price: d(price), qty: d(qty), adjustments: Vec::new() }
    }

    fn open(order_id: u64, client_id: &str, price: &str, qty: &str) -> OpenOrder {
        OpenOrder {
            symbol: "BTCUSD".into(),
            order_id,
            client_order_id: client_id.into(),
            side: Side::Buy,
            price: d(price),
            orig_qty: d(qty),
            executed_qty: Decimal::ZERO,
            changed_at: 0,
        }
    }

    fn reply_of(o: &OpenOrder) -> OrderReply {
        serde_json::from_value(serde_json::json!({
            "symbol": o.symbol, "orderId": o.order_id, "clientOrderId": o.client_order_id,
            "price": o.price.to_string(), "origQty": o.orig_qty.to_string(), "executedQty": "0",
            "status": "NEW", "side": "BUY", "type": "LIMIT_MAKER"
        }))
        .unwrap()
    }

    #[test]
    fn an_unresolved_order_counts_as_open_once() {
        let mut book = Book::new();
        let place = Pending::new("BTCUSD", "a", "sd-a-1".into(), PendingKind::Place(new_order("100", "2")), None, 0);
        assert_eq!(place.extra_open(&book), (1, d("200")));
        // Once the book holds it, the book counts it.
        book.apply_reply(&reply_of(&open(7, "sd-a-1", "100", "2")));
        assert_eq!(place.extra_open(&book), (0, Decimal::ZERO));
        // A replace: while the old is in the book, only what the new adds beyond it.
        let old = open(8, "sd-a-0", "50", "2");
        book.apply_reply(&reply_of(&old));
        let bigger = PendingKind::Replace { old: old.clone(), new: new_order("100", "2") };
        let replace = Pending::new("BTCUSD", "a", "sd-a-2".into(), bigger, None, 0);
        assert_eq!(replace.extra_open(&book), (0, d("100")));
        let smaller = PendingKind::Replace { old: old.clone(), new: new_order("10", "1") };
        let replace_small = Pending::new("BTCUSD", "a", "sd-a-3".into(), smaller, None, 0);
        assert_eq!(replace_small.extra_open(&book), (0, Decimal::ZERO));
        // The old gone from the book: the new counts whole.
        book.close("BTCUSD", 8);
        assert_eq!(replace.extra_open(&book), (1, d("200")));
        let cancel = Pending::new("BTCUSD", "a", "sd-a-1".into(), PendingKind::Cancel { order_id: 7 }, None, 0);
        assert_eq!(cancel.extra_open(&book), (0, Decimal::ZERO));
    }
}
