//! Client order ids: valid for Binance, never reused, traceable to the strategy.
//!
//! An id is `sd-<tag>-<epoch>-<seq>`: `tag` the strategy's (1-8 alphanumerics), `epoch` this
//! run's start in server milliseconds and `seq` a counter, both base 36. At most 2+1+8+1+8+1+8
//! = 29 characters of `[a-zA-Z0-9-]`, inside Binance's `^[a-zA-Z0-9-_]{1,36}$`.
//!
//! Binance only refuses an id that an *open* order holds (`-2010 Duplicate order sent.`), so an
//! id reused for an order that has filled would be accepted and then look like the old one in
//! every lookup. Uniqueness across restarts comes from the epoch: it is saved (fsynced) before
//! the first order of a run, and a new run takes `max(now, saved + 1)`. A SIGKILL loses only
//! the in-memory counter, which the next epoch makes irrelevant; a lost state file still
//! leaves the clock, which only a jump back past the last run's start could defeat.

use crate::error::Error;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

const PREFIX: &str = "sd";

/// The id generator of one run.
#[derive(Debug)]
pub struct ClientIds {
    epoch: String,
    seq: u64,
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

fn epoch_path(state_dir: &Path) -> PathBuf {
    state_dir.join("order-epoch")
}

impl ClientIds {
    /// Picks this run's epoch and saves it before any id is handed out.
    pub fn open(state_dir: &Path, now_ms: i64) -> Result<ClientIds, Error> {
        fs::create_dir_all(state_dir).map_err(Error::io(state_dir))?;
        let path = epoch_path(state_dir);
        let saved = fs::read_to_string(&path).ok().and_then(|t| t.trim().parse::<u64>().ok());
        let epoch = (now_ms.max(0) as u64).max(saved.map_or(0, |s| s + 1));
        let tmp = state_dir.join("order-epoch.tmp");
        let mut f = File::create(&tmp).map_err(Error::io(&tmp))?;
        f.write_all(format!("{epoch}\n").as_bytes()).map_err(Error::io(&tmp))?;
        f.sync_all().map_err(Error::io(&tmp))?;
        fs::rename(&tmp, &path).map_err(Error::io(&path))?;
        if let Ok(dir) = File::open(state_dir) {
            let _ = dir.sync_all();
        }
        Ok(ClientIds { epoch: base36(epoch), seq: 0 })
    }

    /// A fresh id for `tag` (a valid tag: see [`super::intent::valid_tag`]).
    pub fn next(&mut self, tag: &str) -> String {
        self.seq += 1;
        format!("{PREFIX}-{tag}-{}-{}", self.epoch, base36(self.seq))
    }
}

/// The strategy tag inside one of our ids; `None` for an id we did not make (another client,
/// the web UI, an id the exchange generated).
pub fn tag_of(client_order_id: &str) -> Option<&str> {
    let mut parts = client_order_id.split('-');
    let ours = parts.next() == Some(PREFIX);
    let tag = parts.next()?;
    let (epoch, seq) = (parts.next()?, parts.next()?);
    let b36 =
        |s: &str| !s.is_empty() && s.len() <= 13 && s.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase());
    (ours && parts.next().is_none() && super::intent::valid_tag(tag) && b36(epoch) && b36(seq)).then_some(tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("syncd-ids-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn ids_are_valid_and_carry_the_tag() {
        let mut ids = ClientIds::open(&dir("valid"), 1_788_540_400_100).unwrap();
        let id = ids.next("grid01");
        assert!(id.len() <= 36 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{id}");
        assert_eq!(tag_of(&id), Some("grid01"));
        assert_ne!(ids.next("grid01"), id);
        let longest = ClientIds { epoch: base36(u64::MAX >> 20), seq: u64::MAX >> 23 }.next("abcdefgh");
        assert!(longest.len() <= 36, "{longest}");
        for foreign in ["web_7f3a", "6gCrw2kRUAF9CvJDGP16IP", "sd-x", "sd-toolongtag-1-1", "sd-a-B-1", "xx-a-1-1"] {
            assert_eq!(tag_of(foreign), None, "{foreign}");
        }
    }

    #[test]
    fn a_restart_never_reuses_an_id_even_with_the_clock_behind() {
        let d = dir("restart");
        let mut first = ClientIds::open(&d, 5_000).unwrap();
        let a: Vec<String> = (0..3).map(|_| first.next("t")).collect();
        // The "killed" run's counter is gone; the next one starts with the clock set back.
        let mut second = ClientIds::open(&d, 1_000).unwrap();
        let b: Vec<String> = (0..3).map(|_| second.next("t")).collect();
        assert!(a.iter().all(|x| !b.contains(x)), "{a:?} vs {b:?}");
        // A lost state file still has the clock.
        let _ = fs::remove_file(epoch_path(&d));
        let mut third = ClientIds::open(&d, 9_000).unwrap();
        let c = third.next("t");
        assert!(!a.contains(&c) && !b.contains(&c));
    }
}
