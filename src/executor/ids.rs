//! Client order ids: valid for Binance, never reused, traceable to the strategy.
//!
//! An id is `sd-<tag>-<instance>-<epoch>-<seq>`: `tag` the strategy's (1-8 alphanumerics),
//! `instance` this daemon's (4 base-36 characters drawn once and kept in the state dir),
//! `epoch` this run's start in server milliseconds and `seq` a counter, both base 36. At most
//! 2+1+8+1+4+1+8+1+8 = 34 characters of `[a-z0-9-]` (tags may use capitals), inside Binance's
//! `^[a-zA-Z0-9-_]{1,36}$`. The tag comes first so that `sd-<tag>-` is a strategy's prefix.
//!
//! The instance keeps two daemons on one account (two hosts, a staging copy) out of each
//! other's orders: an id with another instance is foreign, so it is never cancelled on exit,
//! handed to a strategy or counted against its limits.
//!
//! Binance only refuses an id that an *open* order holds (`-2010 Duplicate order sent.`), so an
//! id reused for an order that has filled would be accepted and then look like the old one in
//! every lookup. Uniqueness across restarts comes from the epoch: it is saved (fsynced) before
//! the first order of a run, and a new run takes `max(now, saved + 1)`. A SIGKILL loses only
//! the in-memory counter, which the next epoch makes irrelevant; a lost state file still
//! leaves the clock, which only a jump back past the last run's start could defeat.

use crate::error::Error;
use std::fs;
use std::path::{Path, PathBuf};

const PREFIX: &str = "sd";

/// The id generator of one run.
#[derive(Debug)]
pub struct ClientIds {
    instance: String,
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

fn instance_path(state_dir: &Path) -> PathBuf {
    state_dir.join("instance")
}

const INSTANCE_LEN: usize = 4;

fn valid_instance(s: &str) -> bool {
    s.len() == INSTANCE_LEN && s.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
}

/// This state dir's instance: read, or drawn (from the std hasher's random keys) and saved.
fn instance(state_dir: &Path) -> Result<String, Error> {
    let path = instance_path(state_dir);
    match fs::read_to_string(&path) {
        Ok(text) if valid_instance(text.trim()) => return Ok(text.trim().to_string()),
        Ok(text) => {
            return Err(Error::Config(format!(
                "{}: {:?} is not a daemon instance id (4 of 0-9a-z); it names this daemon's orders, so it is not replaced silently: restore it or remove the file (orders with the old id then count as another daemon's)",
                path.display(),
                text.trim()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(&path)(e)),
    }
    let drawn = format!("{:0>4}", base36(crate::sys::random_u64() % 36u64.pow(INSTANCE_LEN as u32)));
    write_synced(state_dir, &path, &drawn)?;
    Ok(drawn)
}

/// Writes `text` to `path` through a private temporary file, synced, so a crash leaves old or new.
fn write_synced(state_dir: &Path, path: &Path, text: &str) -> Result<(), Error> {
    crate::statedir::write_private(state_dir, path, format!("{text}\n").as_bytes())
}

impl ClientIds {
    /// Picks this run's epoch and saves it before any id is handed out.
    pub fn open(state_dir: &Path, now_ms: i64) -> Result<ClientIds, Error> {
        fs::create_dir_all(state_dir).map_err(Error::io(state_dir))?;
        let path = epoch_path(state_dir);
        let saved = fs::read_to_string(&path).ok().and_then(|t| t.trim().parse::<u64>().ok());
        let epoch = (now_ms.max(0) as u64).max(saved.map_or(0, |s| s + 1));
        let instance = instance(state_dir)?;
        write_synced(state_dir, &path, &epoch.to_string())?;
        Ok(ClientIds { instance, epoch: base36(epoch), seq: 0 })
    }

    /// A fresh id for `tag` (a valid tag: see [`super::intent::valid_tag`]).
    pub fn next(&mut self, tag: &str) -> String {
        self.seq += 1;
        format!("{PREFIX}-{tag}-{}-{}-{}", self.instance, self.epoch, base36(self.seq))
    }

    /// The strategy tag inside one of this daemon's ids; `None` for an id it did not make
    /// (another client, the web UI, an id the exchange generated, another daemon).
    pub fn tag_of<'a>(&self, client_order_id: &'a str) -> Option<&'a str> {
        tag_in(client_order_id, Some(&self.instance))
    }

    /// This daemon's instance (the part of its ids that tells them from another daemon's).
    pub fn instance(&self) -> &str {
        &self.instance
    }
}

/// The strategy tag of an id of the `sd-` shape made by `instance`, or by any daemon when
/// `instance` is `None`.
pub fn tag_in<'a>(client_order_id: &'a str, instance: Option<&str>) -> Option<&'a str> {
    let mut parts = client_order_id.split('-');
    let ours = parts.next() == Some(PREFIX);
    let tag = parts.next()?;
    let (made_by, epoch, seq) = (parts.next()?, parts.next()?, parts.next()?);
    let b36 =
        |s: &str| !s.is_empty() && s.len() <= 13 && s.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase());
    (ours
        && parts.next().is_none()
        && super::intent::valid_tag(tag)
        && valid_instance(made_by)
        && instance.is_none_or(|i| i == made_by)
        && b36(epoch)
        && b36(seq))
    .then_some(tag)
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
        assert_eq!(ids.tag_of(&id), Some("grid01"));
        assert_ne!(ids.next("grid01"), id);
        let longest =
            ClientIds { instance: "zzzz".into(), epoch: base36(u64::MAX >> 20), seq: u64::MAX >> 23 }.next("abcdefgh");
        assert!(longest.len() <= 36, "{longest}");
        let inst = ids.instance.clone();
        for foreign in [
            "web_7f3a".to_string(),
            "6gCrw2kRUAF9CvJDGP16IP".into(),
            "sd-x".into(),
            "sd-a-1-1".into(),
            format!("sd-toolongtag-{inst}-1-1"),
            format!("sd-a-{inst}-B-1"),
            format!("xx-a-{inst}-1-1"),
            format!("sd-a-{inst}-1-1-1"),
        ] {
            assert_eq!(ids.tag_of(&foreign), None, "{foreign}");
        }
    }

    #[test]
    fn another_daemons_ids_are_foreign_and_the_instance_survives_a_restart() {
        let (a, b) = (dir("inst-a"), dir("inst-b"));
        let mut first = ClientIds::open(&a, 5_000).unwrap();
        let id = first.next("grid");
        let again = ClientIds::open(&a, 6_000).unwrap();
        assert_eq!(again.tag_of(&id), Some("grid"), "a restart must still own its orders");
        // Two state dirs draw two instances (a clash is one chance in 36^4: retry a few).
        let other = (0..5)
            .map(|i| {
                let d = dir(&format!("inst-b{i}"));
                ClientIds::open(&d, 5_000).unwrap()
            })
            .find(|o| o.instance != first.instance)
            .unwrap();
        assert_eq!(other.tag_of(&id), None, "another daemon's id with the same tag is foreign");
        // A damaged instance file is an error, not a silent new identity.
        let _ = ClientIds::open(&b, 1).unwrap();
        fs::write(instance_path(&b), "not it\n").unwrap();
        assert!(ClientIds::open(&b, 2).is_err());
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
