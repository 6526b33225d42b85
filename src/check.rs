//! `binance-syncd check`: everything `run` will need, checked in the order it needs it, as a
//! short table. Any `FAIL` makes the command exit non-zero; a `warn` does not.
//!
//! Rows: the clock offset, signed access with the key (`GET /api/v3/account`) and its
//! `canTrade`, each of `SYNCD_SYMBOLS` with its main filters, the state directory and the fill
//! log writable, the plugin directory readable and trusted and each `.so` trusted and with the
//! entry symbol (read as data: no plugin is ever loaded here, see `plugin_rows`), and the
//! public market stream reached as the `market` thread would reach it (`market_row`).

use crate::config::Config;
use crate::error::Error;
use crate::filters::{Filter, SymbolRules};
use crate::market::stream::MAX_FRAME;
use crate::rest::{RestClient, ACCOUNT};
use crate::stream::{close, connect_limited, is_timeout};
use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::path::Path;
use std::time::{Duration, Instant};
use tungstenite::Message;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// Worth fixing, but `run` works.
    Warn,
    Fail,
    /// Not checked: an earlier failure makes it meaningless.
    Skipped,
}

impl Verdict {
    fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
            Verdict::Skipped => "skipped",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Row {
    pub what: String,
    pub verdict: Verdict,
    pub detail: String,
}

fn row(what: impl Into<String>, verdict: Verdict, detail: impl Into<String>) -> Row {
    Row { what: what.into(), verdict, detail: detail.into() }
}

/// A clock further off than this is worth a warning (the daemon corrects for it, but the host
/// should run NTP).
const CLOCK_WARN_MS: i64 = 1000;

/// Runs every check; the rows in order.
pub fn run(config: &Config, rest: &RestClient) -> Vec<Row> {
    let mut rows = Vec::new();
    let online = match rest.sync_clock() {
        Ok(offset) if offset.abs() <= CLOCK_WARN_MS => {
            rows.push(row("clock offset", Verdict::Ok, format!("{offset} ms to the exchange")));
            true
        }
        Ok(offset) => {
            rows.push(row(
                "clock offset",
                Verdict::Warn,
                format!("{offset} ms to the exchange (corrected for, but check NTP on this host)"),
            ));
            true
        }
        Err(e) => {
            rows.push(row("clock offset", Verdict::Fail, format!("cannot reach {}: {e}", config.rest_url)));
            false
        }
    };
    if online {
        rows.extend(key_rows(rest));
        rows.extend(symbol_rows(config, rest));
    } else {
        for what in ["API key", "symbols"] {
            rows.push(row(what, Verdict::Skipped, "the exchange is out of reach"));
        }
    }
    rows.push(market_row(config));
    rows.extend(local_rows(config));
    rows
}

/// How long the market row waits to connect, and then for a first frame.
const MARKET_WAIT: Duration = Duration::from_secs(5);

/// The public market stream: the combined stream the `market` thread would open (no key),
/// connected and read until its first data frame. A failure is a warning: `run` works without
/// the stream (the executor polls prices by REST until it connects).
fn market_row(config: &Config) -> Row {
    const WHAT: &str = "market stream";
    if !config.market_stream {
        return row(WHAT, Verdict::Ok, "SYNCD_MARKET_STREAM=false: off (prices are polled by REST)");
    }
    let path = crate::market::stream::combined_path(&config.symbols);
    let started = Instant::now();
    let fallback = "run still works: prices are polled by REST until it connects";
    let mut ws = match connect_limited(&config.market_ws_url, &path, MARKET_WAIT, &config.tls, MAX_FRAME, &mut || {}) {
        Ok(ws) => ws,
        Err(e) => {
            return row(
                WHAT,
                Verdict::Warn,
                format!("failed: cannot connect to {}: {e} ({fallback})", config.market_ws_url),
            )
        }
    };
    let streams = config.symbols.len() * 3;
    let detail = loop {
        let left = MARKET_WAIT.saturating_sub(started.elapsed());
        if left.is_zero() {
            break Err(format!("connected, but no frame within {} s", MARKET_WAIT.as_secs()));
        }
        // Reads are cut at `left` so that a server trickling pings cannot hold the row.
        let _ = ws.get_ref().tcp().set_read_timeout(Some(left));
        match ws.read() {
            Ok(Message::Text(t)) => {
                let name = serde_json::from_str::<serde_json::Value>(t.as_str())
                    .ok()
                    .and_then(|v| v["stream"].as_str().map(str::to_string))
                    .unwrap_or_else(|| "an unnamed frame".to_string());
                break Ok(format!("first frame ({name}) after {} ms", started.elapsed().as_millis()));
            }
            Ok(Message::Binary(_)) => break Ok(format!("first frame after {} ms", started.elapsed().as_millis())),
            Ok(Message::Close(f)) => {
                break Err(format!(
                    "closed by the server before a frame ({})",
                    f.map_or("no reason".into(), |f| f.to_string())
                ))
            }
            Ok(_) => {} // pings are answered by the next read
            Err(e) if is_timeout(&e) => {}
            Err(e) => break Err(format!("lost before a frame: {e}")),
        }
    };
    close(&mut ws);
    match detail {
        Ok(d) => row(WHAT, Verdict::Ok, format!("{} ({streams} streams): {d}", config.market_ws_url)),
        Err(why) => row(WHAT, Verdict::Warn, format!("failed: {}: {why} ({fallback})", config.market_ws_url)),
    }
}

fn key_rows(rest: &RestClient) -> Vec<Row> {
    match rest.call(&ACCOUNT, &[]) {
        Ok(body) => {
            let account: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let signed = row("API key: signed access", Verdict::Ok, "GET /api/v3/account answered");
            let trade = match account["canTrade"].as_bool() {
                Some(true) => row("API key: canTrade", Verdict::Ok, "true"),
                Some(false) => row(
                    "API key: canTrade",
                    Verdict::Fail,
                    "false: the account or key may not trade (enable Spot trading for the key)",
                ),
                None => row("API key: canTrade", Verdict::Fail, "the account reply has no canTrade"),
            };
            vec![signed, trade]
        }
        Err(e) => {
            let hint = match e.api_code() {
                Some(-1022) => " (wrong BINANCE_API_SECRET?)",
                Some(-2014 | -2015) => " (wrong BINANCE_API_KEY, or this IP is not on the key's list?)",
                _ => "",
            };
            vec![
                row("API key: signed access", Verdict::Fail, format!("{e}{hint}")),
                row("API key: canTrade", Verdict::Skipped, "needs signed access"),
            ]
        }
    }
}

fn symbol_rows(config: &Config, rest: &RestClient) -> Vec<Row> {
    let rules = match rest.exchange_info(&config.symbols) {
        Ok(r) => r,
        // The exchange refuses the whole request when one symbol is unknown (-1121): ask for
        // each alone to say which.
        Err(e) if e.api_code() == Some(-1121) => {
            return config
                .symbols
                .iter()
                .map(|s| match rest.exchange_info(std::slice::from_ref(s)) {
                    Ok(r) => match r.symbols.get(s) {
                        Some(rules) => symbol_row(s, rules),
                        None => row(format!("symbol {s}"), Verdict::Fail, "not listed by the exchange"),
                    },
                    Err(e) => row(format!("symbol {s}"), Verdict::Fail, format!("not listed by the exchange ({e})")),
                })
                .collect();
        }
        Err(e) => return vec![row("symbols", Verdict::Fail, format!("exchangeInfo: {e}"))],
    };
    config
        .symbols
        .iter()
        .map(|s| match rules.symbols.get(s) {
            Some(r) => symbol_row(s, r),
            None => row(format!("symbol {s}"), Verdict::Fail, "not listed by the exchange"),
        })
        .collect()
}

fn symbol_row(symbol: &str, rules: &SymbolRules) -> Row {
    let mut detail = rules.status.clone();
    for f in &rules.filters {
        match f {
            Filter::Price { tick_size, .. } => {
                let _ = write!(detail, ", tick {}", tick_size.normalized());
            }
            Filter::LotSize { min_qty, step_size, .. } => {
                let _ = write!(detail, ", step {} (min {})", step_size.normalized(), min_qty.normalized());
            }
            Filter::MinNotional { min_notional, .. } | Filter::Notional { min_notional, .. } => {
                let _ = write!(detail, ", min notional {} {}", min_notional.normalized(), rules.quote_asset);
            }
            _ => {}
        }
    }
    let _ = write!(detail, "; {} filters", rules.filters.len());
    let verdict = if rules.status == "TRADING" { Verdict::Ok } else { Verdict::Warn };
    let maker = rules.order_types.iter().any(|t| t == "LIMIT_MAKER");
    if !maker {
        return row(format!("symbol {symbol}"), Verdict::Fail, format!("{detail}; no LIMIT_MAKER orders"));
    }
    row(format!("symbol {symbol}"), verdict, detail)
}

/// Creates and removes a file in `dir` (created if missing): permissions, a read-only mount,
/// a full disk or a path through a regular file all show here.
///
/// The probe is created as `mkdtemp` would: a name nobody can guess, exclusive creation
/// (`O_EXCL`: an existing file or a planted symlink makes it fail, never followed), so `check`
/// run as root in a directory others can write cannot be made to write through a link.
fn probe_dir(dir: &Path) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    crate::statedir::create_private_dir(dir).map_err(|e| format!("cannot create it: {e}"))?;
    let mut last = None;
    for _ in 0..8 {
        let probe = dir.join(format!(".binance-syncd-check-{}-{:016x}", std::process::id(), crate::sys::random_u64()));
        let opened =
            OpenOptions::new().write(true).create_new(true).mode(0o600).custom_flags(libc::O_NOFOLLOW).open(&probe);
        match opened {
            Ok(mut f) => {
                let written = f.write_all(b"check\n").map_err(|e| format!("cannot write in it: {e}"));
                let _ = fs::remove_file(&probe);
                return written;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(format!("cannot write in it: {e}")),
        }
    }
    Err(format!("cannot create a probe file in it: {}", last.map_or_else(String::new, |e| e.to_string())))
}

/// Whether a daemon holds the state directory's lock (see [`crate::statedir`]).
fn lock_row(dir: &Path) -> Row {
    match crate::statedir::holder(dir) {
        Ok(None) => row("state lock", Verdict::Ok, "free: no daemon runs on this directory"),
        Ok(Some(pid)) => row(
            "state lock",
            Verdict::Ok,
            format!("held by a running daemon (pid {pid}); a second `run` on this directory would exit 2"),
        ),
        Err(e) => row("state lock", Verdict::Fail, format!("{}: {e}", dir.join(crate::statedir::LOCK_FILE).display())),
    }
}

fn local_rows(config: &Config) -> Vec<Row> {
    let mut rows = Vec::new();
    let state = config.state_dir.display().to_string();
    rows.push(match probe_dir(&config.state_dir) {
        Ok(()) => row("state dir", Verdict::Ok, format!("{state} writable")),
        Err(why) => row("state dir", Verdict::Fail, format!("{state}: {why}")),
    });
    rows.push(lock_row(&config.state_dir));
    let log = &config.fill_log;
    rows.push(if log.exists() {
        // Opened for appending, never truncated: `check` must not touch the fills.
        match OpenOptions::new().append(true).open(log) {
            Ok(f) => {
                let size = f.metadata().map(|m| m.len()).unwrap_or(0);
                row("fill log", Verdict::Ok, format!("{} writable ({size} bytes)", log.display()))
            }
            Err(e) => row("fill log", Verdict::Fail, format!("{}: {e}", log.display())),
        }
    } else {
        let parent = log.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        match probe_dir(parent) {
            Ok(()) => row("fill log", Verdict::Ok, format!("{} will be created", log.display())),
            Err(why) => row("fill log", Verdict::Fail, format!("{}: {why}", parent.display())),
        }
    });
    let Some(dir) = &config.plugin_dir else {
        rows.push(row("plugin dir", Verdict::Ok, "SYNCD_PLUGIN_DIR unset: no plugins"));
        return rows;
    };
    rows.extend(plugin_rows(dir, &config.state_dir));
    rows
}

/// The plugin folder and each `.so` as `run` would judge them (`plugin::trust`, tags, a
/// quarantine in `state_dir`), and each image read as data (`plugin::elf`): `check` runs as
/// root, and loading a library runs its code, so no plugin is loaded here. Its ABI version is
/// checked when `run` loads it.
fn plugin_rows(dir: &Path, state_dir: &Path) -> Vec<Row> {
    use crate::plugin::{elf, tag_taken, trust};
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => return vec![row("plugin dir", Verdict::Fail, format!("{}: {e}", dir.display()))],
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().and_then(|x| x.to_str()) == Some("so"))
        .filter_map(|p| p.file_stem().and_then(|s| s.to_str()).map(String::from))
        .collect();
    names.sort();
    let euid = crate::plugin::euid();
    let mut rows = Vec::new();
    let real = match trust::folder(dir, euid) {
        Ok(real) => real,
        Err(why) => {
            rows.push(row("plugin dir", Verdict::Fail, format!("refused: {why}")));
            for name in &names {
                rows.push(row(format!("plugin {name}.so"), Verdict::Fail, "refused: its folder is not trusted"));
            }
            return rows;
        }
    };
    // As `run` does: files are opened under the checked path, and only trusted ones' names
    // give tags.
    let dir = real.as_path();
    let trusted: Vec<&str> =
        names.iter().filter(|n| trust::file_trusted(&dir.join(format!("{n}.so")), euid)).map(String::as_str).collect();
    rows.push(row(
        "plugin dir",
        Verdict::Ok,
        format!("{} readable and trusted, {} plugins", dir.display(), names.len()),
    ));
    // As the daemon's first scan takes them: in name order, each loaded one holding its tag.
    let mut holders = std::collections::HashMap::new();
    for name in &names {
        let judged = (|| -> Result<String, String> {
            let image = trust::open(&dir.join(format!("{name}.so")), euid)?.ok_or("gone while checked")?;
            if let Some(why) = crate::plugin::quarantined(state_dir, dir, name) {
                return Err(why);
            }
            let settings = match trust::open(&dir.join(format!("{name}.conf")), euid)? {
                Some(f) => f.text(crate::plugin::MAX_SETTINGS).map_err(|why| format!("{name}.conf {why}"))?,
                None => String::new(),
            };
            let (tag, claimed) = crate::plugin::tag_of(name, &settings);
            if let Some(why) = tag_taken(name, &tag, claimed, &holders, trusted.iter().copied()) {
                return Err(why);
            }
            let entry = binance_syncd_plugin::abi::ENTRY_SYMBOL;
            elf::defines(image.file(), entry.strip_suffix(b"\0").unwrap_or(entry))?;
            holders.insert(name.clone(), tag.clone());
            Ok(tag)
        })();
        rows.push(match judged {
            Ok(tag) => row(
                format!("plugin {name}.so"),
                Verdict::Ok,
                format!(
                    "trusted, tag {tag}; not loaded: entry symbol found (ABI {}.{} is checked when run loads it)",
                    ABI.0, ABI.1
                ),
            ),
            Err(why) => {
                row(format!("plugin {name}.so"), Verdict::Fail, format!("refused: {why}{}", as_root(euid, &why)))
            }
        });
    }
    rows
}

/// `check` run as root judges ownership as root would; the daemon judges as its own user, and
/// its own files pass there. Said where it matters, so the row is not misread.
fn as_root(euid: u32, why: &str) -> &'static str {
    if euid == 0 && why.contains("owned by") {
        " (check ran as root; run, as the daemon's user, also trusts that user's files)"
    } else {
        ""
    }
}

const ABI: (u32, u32) = (binance_syncd_plugin::abi::ABI_MAJOR, binance_syncd_plugin::abi::ABI_MINOR);

/// The rows as an aligned table.
pub fn table(rows: &[Row]) -> String {
    let width = rows.iter().map(|r| r.what.chars().count()).max().unwrap_or(0).max(5);
    let mut out = format!("{:<width$}  {:<7}  detail\n", "check", "status");
    for r in rows {
        let _ = writeln!(out, "{:<width$}  {:<7}  {}", r.what, r.verdict.as_str(), r.detail);
    }
    out
}

/// The error to exit with when a check failed (warnings pass): a configuration problem, exit 2,
/// as `run` would exit for any of them.
pub fn failure(rows: &[Row]) -> Option<Error> {
    let failed: Vec<&Row> = rows.iter().filter(|r| r.verdict == Verdict::Fail).collect();
    if failed.is_empty() {
        return None;
    }
    let what: Vec<&str> = failed.iter().map(|r| r.what.as_str()).collect();
    Some(Error::Config(format!("{} failed: {}", failed.len(), what.join(", "))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_never_writes_through_a_planted_link_and_leaves_nothing_behind() {
        let dir = std::env::temp_dir().join(format!("syncd-check-probe-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let victim = dir.join("victim");
        fs::write(&victim, "keep me").unwrap();
        // The name the probe had before it was random: someone who can write the directory
        // plants it as a link to a file `check` (run as root) would then overwrite.
        std::os::unix::fs::symlink(&victim, dir.join(format!(".binance-syncd-check-{}", std::process::id()))).unwrap();
        probe_dir(&dir).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep me");
        let left: Vec<_> = fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(left.len(), 2, "only the victim and the link: {left:?}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_lock_row_says_whether_a_daemon_holds_the_directory() {
        let dir = std::env::temp_dir().join(format!("syncd-check-lock-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        assert!(lock_row(&dir).detail.starts_with("free"), "no directory yet: free");
        let lock = crate::statedir::StateLock::acquire(&dir).unwrap();
        let held = lock_row(&dir);
        assert!(held.detail.contains(&format!("pid {}", std::process::id())), "{}", held.detail);
        drop(lock);
        assert!(lock_row(&dir).detail.starts_with("free"));
        let _ = fs::remove_dir_all(&dir);
    }
}
