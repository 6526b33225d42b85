//! A plugin's `NAME.conf` (read with the SDK's `setting`, the one `key = value` reader): the tag rules and the host's own
//! settings (isolation, restart backoff, quarantine, intent budget), each with its default.

use super::exec::Kind;
use super::remote::Limits;
use binance_syncd_plugin::setting;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub(super) fn conf_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.conf"))
}

/// The tag a plugin's file name gives it: the name's first 8 letters and digits.
pub(super) fn name_tag(name: &str) -> String {
    name.chars().filter(char::is_ascii_alphanumeric).take(8).collect()
}

/// The strategy tag: the settings' `tag`, else the name's; and whether the settings chose it.
pub fn tag_of(name: &str, settings: &str) -> (String, bool) {
    match setting(settings, "tag") {
        Some(t) => (t.to_string(), true),
        None => (name_tag(name), false),
    }
}

/// Why `name` may not trade under `tag`, if another plugin holds it: one that took it first
/// (`holders`: name → tag of the plugins loaded and still in the folder, whose orders stay in
/// the book under it), or, for a tag claimed in settings, another file whose name gives it.
/// A plugin keeps a tag it already holds. Settings text is the later claimer: a file's name
/// is there before anyone's settings can point at it.
pub fn tag_taken<'a>(
    name: &str,
    tag: &str,
    claimed_in_settings: bool,
    holders: &HashMap<String, String>,
    names: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    if holders.get(name).is_some_and(|t| t == tag) {
        return None;
    }
    if let Some((other, _)) = holders.iter().filter(|(n, t)| *n != name && *t == tag).min() {
        return Some(format!("tag {tag} is already held by plugin {other}"));
    }
    if claimed_in_settings {
        if let Some(other) = names.into_iter().filter(|n| *n != name && name_tag(n) == tag).min() {
            return Some(format!("tag {tag} (from {name}.conf) is plugin {other}'s, from its file name"));
        }
    }
    None
}

/// Settings larger than this are refused: they are a few lines.
pub const MAX_SETTINGS: u64 = 64 * 1024;

/// Intents a plugin may have unanswered (queued in the executor, in flight, or answered and
/// not yet handed to it), unless its settings say `max_pending`: past that `submit` answers
/// `STATUS_BUSY`, so what the daemon holds for a plugin does not grow with what it submits.
pub(super) const MAX_PENDING: usize = 1024;

/// Crashes in a row (each soon after its start or on the same fill as the one before: see
/// `supervise`) that quarantine a plugin, unless its settings say `quarantine_after`.
pub(super) const QUARANTINE_AFTER: u32 = 3;

/// Restart backoff: from the plugin's `restart_backoff_ms` (default 1 s), doubling after each
/// crash that comes within [`BACKOFF_MAX`] of its start, up to that.
pub(super) const BACKOFF_BASE: Duration = Duration::from_secs(1);
pub(super) const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// What the host itself reads from a plugin's settings (the rest is the plugin's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// `isolation = process` (the default) rather than `none`.
    pub isolated: bool,
    /// `restart_backoff_ms`: the first restart delay after a crash.
    pub restart_base: Duration,
    /// `restart_backoff_max_ms`: the most the restart delay doubles to.
    pub restart_max: Duration,
    /// `memory_mb`, `open_files`: its process's resource limits.
    pub limits: Limits,
    /// `quarantine_after`: crashes in a row that quarantine it (0: never).
    pub quarantine_after: u32,
    /// `max_pending`: intents it may have unanswered.
    pub max_pending: usize,
    /// `cancel_on_stop = true`: its orders go when its file does.
    pub cancel_on_stop: bool,
    /// `history = all`: a name seen for the first time starts at the log's start.
    pub history_all: bool,
    /// `book_depth`: levels a side of each book `on_book` gets (1 to 20).
    pub book_depth: usize,
}

/// Levels a side `on_book` gets unless the settings say `book_depth`.
pub(super) const BOOK_DEPTH: usize = 5;

impl Options {
    /// `name`'s settings text read, or why it is refused.
    pub(super) fn parse(name: &str, settings: &str) -> Result<Options, String> {
        let isolated = match setting(settings, "isolation") {
            None | Some("process") => true,
            Some("none") => false,
            Some(other) => {
                return Err(format!("{name}.conf: isolation = {other:?}: `process` (the default) or `none`"))
            }
        };
        let conf = Conf { name, text: settings };
        let (above_0, ms) = (|n: u64| n > 0, "a number of ms above 0");
        let base_ms = conf.number("restart_backoff_ms", BACKOFF_BASE.as_millis() as u64, above_0, ms)?;
        let restart_base = Duration::from_millis(base_ms).min(BACKOFF_MAX);
        let max_ms = conf.number("restart_backoff_max_ms", BACKOFF_MAX.as_millis() as u64, above_0, ms)?;
        let restart_max = Duration::from_millis(max_ms).clamp(restart_base, BACKOFF_MAX);
        let limits = limits(name, settings)?;
        let quarantine_after =
            conf.number("quarantine_after", QUARANTINE_AFTER, |_| true, "a number of crashes (0: never)")?;
        let max_pending = conf.number("max_pending", MAX_PENDING, |n| n > 0, "a number of intents above 0")?;
        let (depths, most) = (1..=crate::market::feed::MAX_DEPTH, crate::market::feed::MAX_DEPTH);
        let book_depth =
            conf.number("book_depth", BOOK_DEPTH, |n| depths.contains(&n), &format!("levels a side, 1 to {most}"))?;
        Ok(Options {
            book_depth,
            isolated,
            restart_base,
            restart_max,
            limits,
            quarantine_after,
            max_pending,
            cancel_on_stop: setting(settings, "cancel_on_stop") == Some("true"),
            history_all: setting(settings, "history") == Some("all"),
        })
    }

    /// Plugin `name`'s settings as `run` takes them for its `file` of `kind`: read as
    /// `Options::parse` does, and refused when they do not fit the file (`isolation = none`
    /// is for `.so` files). `check` judges with it too.
    pub fn of_plugin(name: &str, file: &str, kind: Kind, settings: &str) -> Result<Options, String> {
        let options = Options::parse(name, settings)?;
        if kind == Kind::Program && !options.isolated {
            return Err(format!("{name}.conf: isolation = none is for .so plugins; {file} is a program"));
        }
        Ok(options)
    }
}

/// A plugin's settings text and the plugin's name, for messages that name its file.
struct Conf<'a> {
    name: &'a str,
    text: &'a str,
}

impl Conf<'_> {
    /// `key`'s number, `default` when the key is absent; refused, naming the file, the key, the
    /// value and what was `wanted`, when it does not parse or `ok` says no.
    fn number<T: std::str::FromStr + Copy>(
        &self,
        key: &str,
        default: T,
        ok: impl Fn(T) -> bool,
        wanted: &str,
    ) -> Result<T, String> {
        match setting(self.text, key) {
            None => Ok(default),
            Some(v) => match v.parse::<T>() {
                Ok(n) if ok(n) => Ok(n),
                _ => Err(format!("{}.conf: {key} = {v:?}: {wanted}", self.name)),
            },
        }
    }
}

/// The resource limits (`memory_mb`, `open_files`) a plugin's settings ask for, each at least
/// what the host itself needs to start and load an image.
pub(super) fn limits(name: &str, settings: &str) -> Result<Limits, String> {
    let (conf, d) = (Conf { name, text: settings }, Limits::default());
    let within = |min: u64| move |n: u64| n >= min && n <= 1 << 30;
    let (mb, files) = (Limits::MIN_MEMORY_MB, Limits::MIN_OPEN_FILES);
    Ok(Limits {
        memory_mb: conf.number("memory_mb", d.memory_mb, within(mb), &format!("a number of MiB, {mb} or more"))?,
        open_files: conf.number(
            "open_files",
            d.open_files,
            within(files),
            &format!("a number of descriptors, {files} or more"),
        )?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holders(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(n, t)| (n.to_string(), t.to_string())).collect()
    }

    #[test]
    fn a_tag_held_by_another_loaded_plugin_is_refused_to_the_later_claimer() {
        let held = holders(&[("grid_maker", "gridmake")]);
        let why = tag_taken("thief", "gridmake", true, &held, ["grid_maker", "thief"]).unwrap();
        assert_eq!(why, "tag gridmake is already held by plugin grid_maker");
        // The holder itself, restarting with the same tag, keeps it.
        assert_eq!(tag_taken("grid_maker", "gridmake", false, &held, ["grid_maker", "thief"]), None);
        // A name that derives a held tag is refused too: the first holder keeps its orders.
        assert!(tag_taken("grid_maker2", "gridmake", false, &held, ["grid_maker", "grid_maker2"]).is_some());
    }

    #[test]
    fn settings_cannot_claim_the_tag_another_file_name_gives() {
        // Neither loaded yet: the file name wins over the settings' claim, whatever the order.
        let why = tag_taken("thief", "gridmake", true, &HashMap::new(), ["grid_maker", "thief"]).unwrap();
        assert_eq!(why, "tag gridmake (from thief.conf) is plugin grid_maker's, from its file name");
        assert_eq!(tag_taken("grid_maker", "gridmake", false, &HashMap::new(), ["grid_maker", "thief"]), None);
        // A claim of a tag no other file's name gives and nobody holds is fine.
        assert_eq!(tag_taken("thief", "mytag", true, &HashMap::new(), ["grid_maker", "thief"]), None);
    }

    #[test]
    fn book_depth_defaults_to_5_and_takes_1_to_20() {
        assert_eq!(Options::parse("p", "").map(|o| o.book_depth), Ok(BOOK_DEPTH));
        assert_eq!(Options::parse("p", "book_depth = 20").map(|o| o.book_depth), Ok(20));
        for bad in ["book_depth = 0", "book_depth = 21", "book_depth = deep"] {
            let e = Options::parse("p", bad).unwrap_err();
            assert!(e.starts_with("p.conf: book_depth"), "{e}");
        }
    }

    #[test]
    fn tag_of_prefers_the_settings_and_says_so() {
        assert_eq!(tag_of("grid_maker", "levels = 3\n"), ("gridmake".to_string(), false));
        assert_eq!(tag_of("grid_maker", "tag = g2 # mine\n"), ("g2".to_string(), true));
    }

    #[test]
    fn limits_come_from_the_settings_with_defaults_and_a_floor() {
        assert_eq!(limits("p", "tag = x\n"), Ok(Limits::default()));
        assert_eq!(
            limits("p", "memory_mb = 64 # small\nopen_files = 32\n"),
            Ok(Limits { memory_mb: 64, open_files: 32 })
        );
        for bad in ["memory_mb = 8", "memory_mb = lots", "open_files = 3", "open_files = -1"] {
            let e = limits("p", bad).unwrap_err();
            assert!(e.starts_with("p.conf: ") && e.contains(bad.split(' ').next().unwrap()), "{e}");
        }
    }
}
