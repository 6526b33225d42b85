//! What a strategy asks of the executor, and what it gets back.
//!
//! A strategy holds a [`StrategyHandle`]: it submits [`Intent`]s and reads [`Reply`]s from its
//! own channel. Every intent gets exactly one reply, except one whose outcome is
//! [`Outcome::Unknown`]: a second reply with the same `request` follows once the executor has
//! found out what happened (placed, or not placed), or gave up finding out
//! ([`Outcome::Unresolved`]).

use crate::decimal::Decimal;
use crate::model::{OrderRef, Side};
use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An order action. Every order the executor places is `LIMIT_MAKER`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intent {
    /// A new maker order. Price is rounded passive (BUY down, SELL up) to the tick, quantity
    /// down to the step; the reply says what was rounded.
    Place { symbol: String, side: Side, price: Decimal, qty: Decimal },
    /// Cancel one of this strategy's orders.
    Cancel { symbol: String, order: OrderRef },
    /// Cancel every open order of this strategy on `symbol` (never anyone else's).
    CancelAll { symbol: String },
    /// Replace one of this strategy's orders by a new one in one request (`cancelReplace`,
    /// `STOP_ON_FAILURE`: nothing is placed unless the cancel succeeded). On a symbol whose
    /// `exchangeInfo` does not say `cancelReplaceAllowed`, a cancel and then a new order: the
    /// same outcomes, except that a cancel whose outcome is unknown ends as that cancel's
    /// outcome (`Unknown`, then `Canceled` or why not) with no new order sent.
    Replace { symbol: String, order: OrderRef, side: Side, price: Decimal, qty: Decimal },
}

impl Intent {
    pub fn symbol(&self) -> &str {
        match self {
            Intent::Place { symbol, .. }
            | Intent::Cancel { symbol, .. }
            | Intent::CancelAll { symbol }
            | Intent::Replace { symbol, .. } => symbol,
        }
    }
}

/// A value that was changed on its way to the exchange, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adjustment {
    pub field: &'static str,
    pub asked: Decimal,
    pub sent: Decimal,
    pub why: String,
}

/// An order the exchange accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub symbol: String,
    pub order_id: u64,
    pub client_order_id: String,
    pub side: Side,
    /// What was sent (after rounding).
    pub price: Decimal,
    pub qty: Decimal,
    /// The exchange's status at the answer: `NEW` for a resting maker order, or already
    /// `PARTIALLY_FILLED`/`FILLED` (or another end, such as `EXPIRED`) when a resolved unknown
    /// outcome had traded or ended meanwhile.
    pub status: String,
    /// Empty when the intent went out exactly as asked.
    pub adjustments: Vec<Adjustment>,
}

/// An order that is no longer open because of a cancel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canceled {
    pub symbol: String,
    pub order_id: u64,
    pub client_order_id: String,
}

/// Why an intent was refused, as a kind a program can match rather than words (issue 21): the
/// plugin SDK's [`Reason`](binance_syncd_plugin::Reason), which a plugin gets as its number.
pub use binance_syncd_plugin::Reason as RefusalCode;

/// What became of one intent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Placed(Placed),
    Canceled(Canceled),
    /// `CancelAll`: the orders cancelled, and those whose cancel failed (with why).
    CanceledAll {
        symbol: String,
        canceled: Vec<Canceled>,
        failed: Vec<(u64, String)>,
    },
    Replaced {
        canceled: Canceled,
        placed: Placed,
    },
    /// Refused here; nothing was sent. `rule` names the rule in a word or two (a filter name,
    /// `balance`, `crosses book`, `max open orders`, ...), `reason` says it in full, `code` is
    /// the kind of rule for a program to match (a plugin gets it as `SYNCD_REASON_*`).
    Refused {
        rule: String,
        reason: String,
        code: RefusalCode,
    },
    /// The exchange said no. `taker` marks `-2010 Order would immediately match and take`: the
    /// price crossed the book by the time it arrived (never retried as a taker). `canceled`:
    /// for a replace whose cancel succeeded and whose new order failed (`-2021`).
    Rejected {
        code: i64,
        msg: String,
        taker: bool,
        canceled: Option<Canceled>,
    },
    /// The request may or may not have taken effect (5xx, timeout, reset). A second reply
    /// follows, once it is known.
    Unknown {
        client_order_id: String,
    },
    /// The exchange never got this order (or this cancel), or did nothing with it: answered
    /// only when that is known (not sent at all, or a cancel whose order is still open after
    /// two sends). Never a guess.
    NotDone {
        client_order_id: String,
        reason: String,
    },
    /// A resolved [`Outcome::Unknown`] whose lookups gave up: the order `client_order_id` (the
    /// new one of a placement or replace, the cancelled one of a cancel) may or may not exist.
    /// It is never sent again; it counts as open against the strategy's limits until the
    /// executor knows (it keeps looking, and the stream's reports and the book show it if it
    /// exists). Look for it by this client id (reports, `ExecutorView::open_orders`).
    Unresolved {
        client_order_id: String,
        reason: String,
    },
}

impl Outcome {
    /// Whether another reply for the same request is still to come.
    pub fn is_final(&self) -> bool {
        !matches!(self, Outcome::Unknown { .. })
    }
}

/// An `executionReport` of one of a strategy's own orders, as the stream delivered it: what
/// happened to the order after its placement (fills, a cancel by someone else, an expiry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderReport {
    /// The order as the report describes it.
    pub order: super::book::OpenOrder,
    /// The order's status (`X`): NEW, PARTIALLY_FILLED, FILLED, CANCELED, EXPIRED, ...
    pub status: String,
    /// What happened (`x`): NEW, TRADE, CANCELED, EXPIRED, REJECTED, ...
    pub execution: String,
}

/// One answer on a strategy's reply channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The id [`StrategyHandle::submit`] returned.
    pub request: u64,
    pub outcome: Outcome,
    /// Time from submission to this answer: the queue, the rate gate and the round trip.
    pub waited: Duration,
    /// This answers an earlier [`Outcome::Unknown`].
    pub resolved: bool,
}

/// An intent on its way to the executor thread.
#[derive(Debug)]
pub struct Request {
    pub id: u64,
    pub tag: String,
    pub intent: Intent,
    pub reply: Sender<Reply>,
    pub submitted: Instant,
    /// The submitting handle's revocation: a request still queued when its handle is revoked
    /// (its plugin stopped or swapped) is refused, never sent.
    pub revoked: Arc<AtomicBool>,
}

impl Request {
    pub fn is_revoked(&self) -> bool {
        self.revoked.load(Ordering::SeqCst)
    }
}

/// Why an intent could not even be queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitError {
    /// The executor's queue is full: the daemon is busy (or held by a 429). Try later.
    Full,
    /// The handle was revoked (its strategy stopped) or the executor has stopped.
    Closed,
    /// The strategy is paused (a plugin stalled in a callback): try again once it recovers.
    Paused,
    /// The strategy's budget of intents not yet answered to it is spent
    /// ([`StrategyHandle::set_budget`]): nothing was queued.
    Busy,
}

impl std::fmt::Display for SubmitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SubmitError::Full => f.write_str("executor queue full"),
            SubmitError::Closed => f.write_str("executor handle closed"),
            SubmitError::Paused => f.write_str("strategy paused"),
            SubmitError::Busy => f.write_str("strategy's budget of unanswered intents spent"),
        }
    }
}

/// A strategy's way to the executor. Cloning shares the tag, the reply channel and the
/// revocation: a clone is the same strategy.
#[derive(Debug, Clone)]
pub struct StrategyHandle {
    tag: String,
    requests: Sender<Request>,
    reply: Sender<Reply>,
    next_id: Arc<AtomicU64>,
    revoked: Arc<AtomicBool>,
    paused: Arc<AtomicBool>,
    /// Intents queued whose answer the strategy has not taken yet ([`StrategyHandle::answered`])
    /// and the most it may have (0: no limit). Bounds what one strategy holds in the executor's
    /// queues and in its (unbounded) reply channel, whatever it submits.
    pending: Arc<AtomicUsize>,
    budget: Arc<AtomicUsize>,
}

impl StrategyHandle {
    pub(crate) fn new(tag: String, requests: Sender<Request>) -> (StrategyHandle, Receiver<Reply>) {
        // Unbounded: the executor must never block on a strategy that reads its replies late.
        let (reply, replies) = crossbeam_channel::unbounded();
        let handle = StrategyHandle {
            tag,
            requests,
            reply,
            next_id: Arc::new(AtomicU64::new(1)),
            revoked: Arc::new(AtomicBool::new(false)),
            paused: Arc::new(AtomicBool::new(false)),
            pending: Arc::new(AtomicUsize::new(0)),
            budget: Arc::new(AtomicUsize::new(0)),
        };
        (handle, replies)
    }

    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// Queues `intent`; returns its request id, which its reply carries.
    pub fn submit(&self, intent: Intent) -> Result<u64, SubmitError> {
        if self.revoked.load(Ordering::SeqCst) {
            return Err(SubmitError::Closed);
        }
        if self.paused.load(Ordering::SeqCst) {
            return Err(SubmitError::Paused);
        }
        let budget = self.budget.load(Ordering::Relaxed);
        if budget != 0 && self.pending.load(Ordering::Acquire) >= budget {
            return Err(SubmitError::Busy);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let request = Request {
            id,
            tag: self.tag.clone(),
            intent,
            reply: self.reply.clone(),
            submitted: Instant::now(),
            revoked: self.revoked.clone(),
        };
        // Counted before it can be answered, so an answer never finds the count at zero.
        self.pending.fetch_add(1, Ordering::AcqRel);
        let sent = self.requests.try_send(request);
        if sent.is_err() {
            self.answered();
        }
        match sent {
            Ok(()) => Ok(id),
            Err(TrySendError::Full(_)) => Err(SubmitError::Full),
            Err(TrySendError::Disconnected(_)) => Err(SubmitError::Closed),
        }
    }

    /// Every later `submit` of this handle and its clones fails with [`SubmitError::Closed`].
    pub fn revoke(&self) {
        self.revoked.store(true, Ordering::SeqCst);
    }

    /// At most `n` intents unanswered (queued, in flight, or answered but not yet taken by
    /// the strategy, which says so with [`StrategyHandle::answered`]); past that `submit`
    /// fails with [`SubmitError::Busy`]. 0: no limit.
    pub fn set_budget(&self, n: usize) {
        self.budget.store(n, Ordering::Relaxed);
    }

    /// The strategy took the first answer (`resolved == false`) of one of its intents.
    pub fn answered(&self) {
        let _ = self.pending.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// Intents whose answer the strategy has not taken yet.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    /// While paused, `submit` fails with [`SubmitError::Paused`].
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
    }
}

/// A tag must fit in a client order id and be readable back out of it.
pub fn valid_tag(tag: &str) -> bool {
    (1..=8).contains(&tag.len()) && tag.bytes().all(|b| b.is_ascii_alphanumeric())
}
