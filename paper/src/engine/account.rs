//! The account: balances (free and locked), the `account` endpoint, deposits, and the one
//! listen key with its life cycle (create, extend, close, expire, forget) and history.

use super::{fmt8, ApiError, Engine, Rng};
use crate::hub::StreamItem;
use crate::sign::Secret;
use binance_syncd_plugin::Decimal;
use serde::Serialize;
use serde_json::{json, Value};

#[derive(Debug, Clone, Serialize)]
pub struct ListenKeyEvent {
    pub time_ms: i64,
    /// Fingerprint of the key.
    pub key: String,
    pub what: String,
}

#[derive(Debug, Clone)]
pub(super) struct ListenKey {
    pub(super) key: String,
    pub(super) expires_ms: i64,
}

/// Listen keys look like Binance's: 60 opaque alphanumerics.
fn make_key(rng: &mut Rng) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..60).map(|_| ALPHABET[(rng.next_u64() % ALPHABET.len() as u64) as usize] as char).collect()
}

impl Engine {
    pub fn account(&self, now_ms: i64) -> Value {
        let balances: Vec<Value> = self
            .balances
            .iter()
            .map(|(a, (free, locked))| json!({"asset": a, "free": fmt8(*free), "locked": fmt8(*locked)}))
            .collect();
        let bps = |d: Decimal| d.checked_mul(Decimal::from_int(10_000)).and_then(|v| v.to_fixed_i64(0)).unwrap_or(0);
        json!({
            "makerCommission": bps(self.settings.maker_commission),
            "takerCommission": bps(self.settings.taker_commission),
            "buyerCommission": 0, "sellerCommission": 0,
            "commissionRates": {
                "maker": fmt8(self.settings.maker_commission), "taker": fmt8(self.settings.taker_commission),
                "buyer": "0.00000000", "seller": "0.00000000"
            },
            "canTrade": true, "canWithdraw": true, "canDeposit": true, "brokered": false,
            "requireSelfTradePrevention": false, "updateTime": now_ms, "accountType": "SPOT",
            "balances": balances, "permissions": ["SPOT"], "tradeGroupId": -1
        })
    }

    pub fn balance(&self, asset: &str) -> (Decimal, Decimal) {
        self.balances.get(asset).copied().unwrap_or((Decimal::ZERO, Decimal::ZERO))
    }

    pub(super) fn adjust(&mut self, asset: &str, free: Decimal, locked: Decimal) {
        let entry = self.balances.entry(asset.to_string()).or_insert((Decimal::ZERO, Decimal::ZERO));
        entry.0 = entry.0.checked_add(free).unwrap_or(entry.0);
        entry.1 = entry.1.checked_add(locked).unwrap_or(entry.1);
    }

    /// A deposit: `balanceUpdate` then `outboundAccountPosition`, as Binance sends them.
    pub fn deposit(&mut self, asset: &str, amount: Decimal, now_ms: i64) {
        self.adjust(asset, amount, Decimal::ZERO);
        let ev = json!({"e": "balanceUpdate", "E": now_ms, "a": asset, "d": fmt8(amount), "T": now_ms});
        self.publish(&ev);
        self.publish_positions(&[asset], now_ms);
    }

    pub fn listen_key_create(&mut self, now_ms: i64) -> String {
        let ttl = self.settings.listen_key_ttl.as_millis() as i64;
        if let Some(k) = &mut self.listen_key {
            if k.expires_ms > now_ms {
                k.expires_ms = now_ms + ttl;
                let key = k.key.clone();
                self.note_key(&key, "returned live key (extended)", now_ms);
                return key;
            }
        }
        self.key_counter += 1;
        let key = make_key(&mut self.rng);
        self.listen_key = Some(ListenKey { key: key.clone(), expires_ms: now_ms + ttl });
        self.note_key(&key, "created", now_ms);
        key
    }

    pub fn listen_key_keepalive(&mut self, key: &str, now_ms: i64) -> Result<(), ApiError> {
        let ttl = self.settings.listen_key_ttl.as_millis() as i64;
        match &mut self.listen_key {
            Some(k) if k.key == key && k.expires_ms > now_ms => {
                k.expires_ms = now_ms + ttl;
                self.note_key(key, "extended", now_ms);
                Ok(())
            }
            _ => {
                self.note_key(key, "keepalive of unknown key", now_ms);
                Err(ApiError::bad(-1125, "This listenKey does not exist."))
            }
        }
    }

    pub fn listen_key_close(&mut self, key: &str, now_ms: i64) -> Result<(), ApiError> {
        match &self.listen_key {
            Some(k) if k.key == key && k.expires_ms > now_ms => {
                self.listen_key = None;
                self.note_key(key, "closed", now_ms);
                self.hub.command(Some(key), StreamItem::Close { code: 1000, reason: "listen key closed".into() });
                Ok(())
            }
            _ => Err(ApiError::bad(-1125, "This listenKey does not exist.")),
        }
    }

    /// Whether `key` is the live key; the WS layer asks this at connect time.
    pub fn live_key(&self, key: &str, now_ms: i64) -> bool {
        self.listen_key.as_ref().is_some_and(|k| k.key == key && k.expires_ms > now_ms)
    }

    /// Expires the live key now (fault) or when its time has come: `listenKeyExpired`, then
    /// nothing more on that key.
    pub fn expire_key(&mut self, now_ms: i64, force: bool) {
        let Some(k) = self.listen_key.clone() else { return };
        if !force && k.expires_ms > now_ms {
            return;
        }
        let ev = json!({"e": "listenKeyExpired", "E": now_ms, "listenKey": k.key});
        self.publish(&ev);
        self.listen_key = None;
        self.note_key(&k.key, "expired", now_ms);
    }

    /// The key stops existing without a word: a key that silently stops delivering, which a
    /// client must notice by itself.
    pub fn forget_key(&mut self, now_ms: i64) {
        if let Some(k) = self.listen_key.take() {
            self.note_key(&k.key, "forgotten", now_ms);
        }
    }

    pub(super) fn note_key(&mut self, key: &str, what: &str, now_ms: i64) {
        self.key_history.push(ListenKeyEvent {
            time_ms: now_ms,
            key: Secret::new(key).fingerprint(),
            what: what.to_string(),
        });
    }

    /// The live key, for faults aimed at "the stream".
    pub fn current_key(&self) -> Option<String> {
        self.listen_key.as_ref().map(|k| k.key.clone())
    }
}
