//! The log's dedupe: which trade ids were logged, per symbol, in bounded memory.

use super::*;

/// Remembers which trade ids were logged, per symbol.
///
/// Older ids are summarised by a floor: an id at or below it counts as seen. The floor only
/// ever covers ids below the symbol's reconciliation cursor ([`keep_from`](Self::keep_from)),
/// whose fills REST has already read in full: an id at or above the cursor counts as seen
/// only if it was logged, however many fills came after it (issue 19: with a floor free to
/// rise, 10,000 later stream fills during a long REST ban pushed it past a fill the stream had
/// dropped, which reconciliation then took as known and the cursor passed). Below the cursor
/// the newest `capacity` ids stay exact, so a late duplicate is still recognised.
///
/// Memory: per symbol, `capacity` ids plus those logged at or above its cursor, that is the
/// fills the stream logged that REST has not read yet (a REST outage's worth; the first pass
/// after it moves the cursor a page of 1000 at a time, and they fold into the floor). A symbol
/// with no cursor (not tracked, or before the cursors are known) keeps `capacity` ids.
#[derive(Debug, Clone)]
pub struct Dedupe {
    pub(super) capacity: usize,
    pub(super) symbols: HashMap<String, SymbolIds>,
}

#[derive(Debug, Clone, Default)]
pub(super) struct SymbolIds {
    pub(super) recent: BTreeSet<u64>,
    pub(super) floor: Option<u64>,
    /// The reconciliation cursor: ids at or above it never go into the floor.
    pub(super) keep_from: Option<u64>,
}

impl SymbolIds {
    /// A floor at or past the cursor (an older carry, possibly raised by forged files before
    /// rotated files were checked, or a cursor set back by hand) would make REST skip real
    /// fills as logged: it is cut to just under the cursor. Every id logged at or above the
    /// cursor is kept exactly (here and in the carry), so nothing the log holds is lost.
    pub(super) fn clamp_floor(&mut self, symbol: &str) {
        let (Some(floor), Some(cursor)) = (self.floor, self.keep_from) else { return };
        if floor < cursor {
            return;
        }
        log::warn!(
            "fill log dedupe: {symbol}: a saved floor at trade id {floor} is at or past the reconciliation cursor {cursor}; cut to {}, so REST reads those ids again",
            cursor.saturating_sub(1)
        );
        self.floor = cursor.checked_sub(1).filter(|f| *f > 0);
    }

    /// The oldest exact id, if it may go into the floor: over capacity and under the cursor.
    pub(super) fn evictable(&self, capacity: usize) -> Option<u64> {
        let oldest = *self.recent.first()?;
        (self.recent.len() > capacity && self.keep_from.is_none_or(|k| oldest < k)).then_some(oldest)
    }

    pub(super) fn evict(&mut self, oldest: u64) {
        self.recent.remove(&oldest);
        self.floor = Some(self.floor.map_or(oldest, |f| f.max(oldest)));
    }

    /// Moves ids that went under the cursor into the floor, down to capacity.
    pub(super) fn trim(&mut self, capacity: usize) {
        while let Some(oldest) = self.evictable(capacity) {
            self.evict(oldest);
        }
    }
}

impl Dedupe {
    pub fn new(capacity: usize) -> Dedupe {
        Dedupe { capacity: capacity.max(1), symbols: HashMap::new() }
    }

    pub fn contains(&self, symbol: &str, trade_id: u64) -> bool {
        self.symbols.get(symbol).is_some_and(|s| s.recent.contains(&trade_id) || s.floor.is_some_and(|f| trade_id <= f))
    }

    /// Records an id; returns false if it was already seen.
    pub fn insert(&mut self, symbol: &str, trade_id: u64) -> bool {
        self.insert_evicting(symbol, trade_id).is_some()
    }

    /// Binds `symbol`'s floor to its reconciliation cursor (the next `fromId`; 0 while it reads
    /// by time): ids at or above `cursor` stay exact, and ids below it beyond capacity go into
    /// the floor.
    pub fn keep_from(&mut self, symbol: &str, cursor: u64) {
        self.bind(symbol, cursor);
        if let Some(ids) = self.symbols.get_mut(symbol) {
            ids.trim(self.capacity);
        }
    }

    /// [`keep_from`](Self::keep_from) without the trim (while insertions may be taken back).
    pub(super) fn bind(&mut self, symbol: &str, cursor: u64) {
        let ids = self.symbols.entry(symbol.to_string()).or_default();
        ids.keep_from = Some(cursor);
        ids.clamp_floor(symbol);
    }

    /// [`keep_from`](Self::keep_from)'s deferred trims, after a commit.
    pub(super) fn trim_all(&mut self) {
        for ids in self.symbols.values_mut() {
            ids.trim(self.capacity);
        }
    }

    /// As [`insert`](Self::insert): `None` if already seen, else the id it moved into the
    /// floor to stay within capacity (the new one itself, if older than every kept one).
    pub(super) fn insert_evicting(&mut self, symbol: &str, trade_id: u64) -> Option<Option<u64>> {
        if self.contains(symbol, trade_id) {
            return None;
        }
        let ids = match self.symbols.get_mut(symbol) {
            Some(ids) => ids,
            None => self.symbols.entry(symbol.to_string()).or_default(),
        };
        ids.recent.insert(trade_id);
        let evicted = ids.evictable(self.capacity);
        if let Some(oldest) = evicted {
            ids.evict(oldest);
        }
        Some(evicted)
    }

    /// As [`insert`](Self::insert), returning what [`undo`](Self::undo) needs to take the id
    /// back exactly (the floor it may have raised, the id it may have evicted).
    pub(super) fn insert_undoable(&mut self, symbol: &str, trade_id: u64) -> Option<Undo> {
        let floor_before = self.symbols.get(symbol).and_then(|ids| ids.floor);
        let evicted = self.insert_evicting(symbol, trade_id)?;
        Some(Undo { symbol: symbol.to_string(), trade_id, floor_before, evicted })
    }

    /// Takes back an [`insert_undoable`](Self::insert_undoable), newest first.
    pub(super) fn undo(&mut self, u: Undo) {
        if let Some(ids) = self.symbols.get_mut(&u.symbol) {
            ids.recent.remove(&u.trade_id);
            if let Some(e) = u.evicted.filter(|e| *e != u.trade_id) {
                ids.recent.insert(e);
            }
            ids.floor = u.floor_before;
        }
    }

    /// Every symbol's floor and exact ids, for a [`Carry`].
    pub fn export(&self) -> std::collections::BTreeMap<String, CarriedIds> {
        self.symbols
            .iter()
            .map(|(s, ids)| (s.clone(), CarriedIds { floor: ids.floor, recent: ids.recent.iter().copied().collect() }))
            .collect()
    }

    /// Takes in what an earlier file knew (its ids count as seen).
    pub fn absorb(&mut self, carry: &Carry) {
        for (symbol, carried) in &carry.ids {
            if let Some(floor) = carried.floor {
                let ids = self.symbols.entry(symbol.clone()).or_default();
                ids.floor = Some(ids.floor.map_or(floor, |f| f.max(floor)));
                ids.clamp_floor(symbol);
                // Exact ids under the floor are covered by it.
                let floor = ids.floor.unwrap_or(0);
                ids.recent.retain(|id| *id > floor);
            }
            for id in &carried.recent {
                self.insert(symbol, *id);
            }
        }
    }

    /// The lowest id still known exactly per symbol (the floor + 1 once ids were evicted).
    pub fn first_ids(&self) -> HashMap<String, u64> {
        self.symbols
            .iter()
            .filter_map(|(s, ids)| {
                let exact = ids.recent.first().copied();
                let id = match (ids.floor, exact) {
                    (Some(f), Some(e)) => Some(e.min(f + 1)),
                    (Some(f), None) => Some(f + 1),
                    (None, e) => e,
                };
                id.map(|id| (s.clone(), id))
            })
            .collect()
    }
}

/// What it takes to take one [`Dedupe`] insertion back.
#[derive(Debug, Clone)]
pub(super) struct Undo {
    pub(super) symbol: String,
    pub(super) trade_id: u64,
    pub(super) floor_before: Option<u64>,
    pub(super) evicted: Option<u64>,
}
