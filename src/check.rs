//! `binance-syncd check`: everything `run` will need, checked in the order it needs it, as a
//! short table. Any `FAIL` makes the command exit non-zero; a `warn` does not.
//!
//! Rows: the clock offset, signed access with the key (`GET /api/v3/account`) and its
//! `canTrade`, each of `SYNCD_SYMBOLS` with its main filters, the state directory and the fill
//! log writable, the plugin directory readable and trusted and each plugin file as `run` would
//! judge it (`.so` files and programs, name clashes, trust, quarantine, `NAME.conf`, tag), read
//! as data: no plugin is ever loaded or run here, see `plugin_rows`. A `.so` must define the
//! entry symbol; a program must be one `execve` would start (a script's `#!` interpreter, an ELF
//! binary's loader), and a Python one that imports the SDK is told where `binance_syncd` is
//! found (`sdk_note`); a Python module beside program plugins that is not trusted as a plugin
//! file is, or that Python runs at start-up, is a warning (`module_rows`). Last, the public
//! market stream reached as the `market` thread would reach it (`market_row`).

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

/// The plugin folder and each plugin file as `run` would judge them: which files are plugins
/// and under which name (`exec::plugin_files`, two files of one name both refused), trust
/// (`plugin::trust`), a quarantine in `state_dir`, `NAME.conf` read and valid, tags. Each image
/// is read as data, never loaded or run: `check` runs as root, and loading a library or
/// starting a program runs its code. A `.so` must define the entry symbol (`plugin::elf`; its
/// ABI version is checked when `run` loads it); a program must be one `execve` can start
/// ([`program_row`]).
fn plugin_rows(dir: &Path, state_dir: &Path) -> Vec<Row> {
    use crate::plugin::exec::{clash, plugin_files, Kind};
    use crate::plugin::{tag_taken, trust, Options};
    let listed = match plugin_files(dir) {
        Ok(files) => files,
        Err(e) => return vec![row("plugin dir", Verdict::Fail, format!("{}: {e}", dir.display()))],
    };
    let what = |file: &str| format!("plugin {file}");
    let euid = crate::plugin::euid();
    let mut rows = Vec::new();
    let real = match trust::folder(dir, euid) {
        Ok(real) => real,
        Err(why) => {
            rows.push(row("plugin dir", Verdict::Fail, format!("refused: {why}")));
            for (file, _) in listed.values().flatten() {
                rows.push(row(what(file), Verdict::Fail, "refused: its folder is not trusted"));
            }
            return rows;
        }
    };
    // As `run` does: files are opened under the checked path, and only trusted ones' names
    // give tags (a clash by its first file, as `run` sees it).
    let dir = real.as_path();
    let trusted: Vec<&str> = listed
        .iter()
        .filter(|(_, files)| files.first().is_some_and(|(f, _)| trust::file_trusted(&dir.join(f), euid)))
        .map(|(n, _)| n.as_str())
        .collect();
    rows.push(row(
        "plugin dir",
        Verdict::Ok,
        format!("{} readable and trusted, {} plugins", dir.display(), listed.len()),
    ));
    // As the daemon's first scan takes them: in name order, each loaded one holding its tag.
    let mut holders = std::collections::HashMap::new();
    for (name, files) in &listed {
        if let Some(why) = clash(name, files) {
            for (file, _) in files {
                rows.push(row(what(file), Verdict::Fail, format!("refused: {why}")));
            }
            continue;
        }
        let Some((file, kind)) = files.first() else { continue };
        let judged = (|| -> Result<(Verdict, String), String> {
            let image = trust::open(&dir.join(file), euid)?.ok_or("gone while checked")?;
            if let Some(why) = crate::plugin::quarantined(state_dir, dir, name) {
                return Err(why);
            }
            let settings = match trust::open(&dir.join(format!("{name}.conf")), euid)? {
                Some(f) => f.text(crate::plugin::MAX_SETTINGS).map_err(|why| format!("{name}.conf {why}"))?,
                None => String::new(),
            };
            Options::of_plugin(name, file, *kind, &settings)?;
            let (tag, claimed) = crate::plugin::tag_of(name, &settings);
            if let Some(why) = tag_taken(name, &tag, claimed, &holders, trusted.iter().copied()) {
                return Err(why);
            }
            let (verdict, detail) = match kind {
                Kind::Library => {
                    let entry = binance_syncd_plugin::abi::ENTRY_SYMBOL;
                    crate::plugin::elf::defines(image.file(), entry.strip_suffix(b"\0").unwrap_or(entry))?;
                    let (major, minor) = ABI;
                    let detail =
                        format!("not loaded: entry symbol found (ABI {major}.{minor} is checked when run loads it)");
                    (Verdict::Ok, detail)
                }
                Kind::Program => program_row(&image, file, dir)?,
            };
            holders.insert(name.clone(), tag.clone());
            Ok((verdict, format!("trusted, tag {tag}; {detail}")))
        })();
        rows.push(match judged {
            Ok((verdict, detail)) => row(what(file), verdict, detail),
            Err(why) => row(what(file), Verdict::Fail, format!("refused: {why}{}", as_root(euid, &why))),
        });
    }
    if listed.values().flatten().any(|(_, kind)| *kind == Kind::Program) {
        rows.extend(module_rows(dir, euid));
    }
    rows
}

/// What Python imports from a folder on its path: sources, and compiled modules standing
/// alone (extension modules are `.so` files, judged as plugins).
const PY_MODULES: &[&str] = &[".py", ".pyc"];
/// What Python's `site` imports at start-up from the first folder on its path that has it,
/// whatever the script imports.
const STARTUP_MODULES: &[&str] = &["sitecustomize", "usercustomize"];

/// The Python modules beside the program plugins in the (trusted) folder `dir`: `run` starts
/// programs with `PYTHONPATH` naming it, so every Python plugin may import them, yet only
/// plugin files are judged when a plugin starts. A `warn` for each one not trusted as a plugin
/// file would be (whoever may write it runs code in the plugins), and for `sitecustomize` and
/// `usercustomize`, which run in every Python plugin at start-up; the same for the modules in
/// its subfolders (packages, `__pycache__`), and a `warn` for a subfolder others may write.
/// Hidden entries, plugins, symlinks and everything else (settings, data) are left alone.
fn module_rows(dir: &Path, euid: u32) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut seen = 0;
    module_rows_under(dir, "", euid, 0, &mut seen, &mut rows);
    rows
}

/// How deep into subfolders (packages, `__pycache__`) and how many entries [`module_rows`]
/// looks: a plugin folder is small; a huge tree is somebody else's, not a reason to hang.
const MODULE_DEPTH: usize = 4;
const MODULE_ENTRIES: usize = 2000;

/// [`module_rows`] for folder `dir`, `prefix` its path under the plugin folder (`""` for the
/// folder itself, `"pkg/"` below it). A subfolder is a package Python imports from as well:
/// one that others may write is a `warn` like a loose module, and its modules are judged too.
fn module_rows_under(dir: &Path, prefix: &str, euid: u32, depth: usize, seen: &mut usize, rows: &mut Vec<Row>) {
    use crate::plugin::exec::plugin_name;
    use crate::trust::{judge_dir, judge_file, Facts};
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = fs::read_dir(dir) else { return };
    let mut names: Vec<String> = entries.flatten().filter_map(|e| e.file_name().to_str().map(String::from)).collect();
    names.sort();
    for name in names {
        *seen += 1;
        if *seen > MODULE_ENTRIES || name.starts_with('.') {
            continue;
        }
        let path = dir.join(&name);
        let Ok(m) = fs::symlink_metadata(&path) else { continue };
        let shown = format!("{prefix}{name}");
        if m.is_dir() {
            // Deeper than any package layout a plugin folder has: not walked (nor warned of).
            if depth >= MODULE_DEPTH {
                continue;
            }
            if let Err(distrust) = judge_dir(Facts::of(&m), euid, false) {
                let distrust = distrust.to_string();
                rows.push(row(
                    format!("folder {shown}/"),
                    Verdict::Warn,
                    format!(
                        "{shown}/ {distrust}, and Python plugins import packages from the plugin folder (PYTHONPATH): whoever may write it adds code to them (chown it to root or the daemon's user, chmod 0755){}",
                        as_root(euid, &distrust)
                    ),
                ));
            }
            module_rows_under(&path, &format!("{shown}/"), euid, depth + 1, seen, rows);
            continue;
        }
        let Some(stem) = PY_MODULES.iter().find_map(|ext| name.strip_suffix(ext)) else { continue };
        // At the top, an executable file is a plugin of its own, judged as one.
        if !m.is_file() || (depth == 0 && plugin_name(&name, m.mode()).is_some()) {
            continue;
        }
        let mut why = Vec::new();
        if let Err(distrust) = judge_file(Facts::of(&m), euid) {
            let distrust = distrust.to_string();
            why.push(format!(
                "{shown} {distrust}, and Python plugins import modules from this folder (PYTHONPATH): whoever may write it runs code in them (chown it to root or the daemon's user, chmod 0644){}",
                as_root(euid, &distrust)
            ));
        }
        if depth == 0 && STARTUP_MODULES.contains(&stem) {
            why.push(format!(
                "Python imports {stem} at start-up in every Python plugin (PYTHONPATH names this folder), whether the plugin imports it or not: remove it unless that is meant"
            ));
        }
        if !why.is_empty() {
            rows.push(row(format!("module {shown}"), Verdict::Warn, why.join("; ")));
        }
    }
}

/// What `execve` makes of program plugin `file` (open as `image`), read as data: a binary for
/// this machine whose dynamic loader exists, or a script whose `#!` interpreter (and, through
/// `env`, the program it names, looked up in the plugin's `PATH`) exists and is executable.
/// `Err` when it would fail to start. A Python script that imports the SDK also gets a word on
/// where `binance_syncd` comes from ([`sdk_note`]); that one is a warning at most.
fn program_row(image: &crate::plugin::trust::Opened, file: &str, dir: &Path) -> Result<(Verdict, String), String> {
    use std::os::unix::fs::FileExt;
    let f = image.file();
    if crate::plugin::elf::is_elf(f) {
        let loader = crate::plugin::elf::interpreter(f)?;
        return match loader {
            None => Ok((Verdict::Ok, "not run: a static ELF executable".into())),
            Some(l) => {
                runnable(Path::new(&l))
                    .map_err(|why| format!("its dynamic loader {l} {why}: it would fail to start"))?;
                Ok((Verdict::Ok, format!("not run: an ELF executable (loader {l})")))
            }
        };
    }
    let mut head = vec![0u8; SHEBANG_BUF];
    let n = f.read_at(&mut head, 0).map_err(|e| format!("{file}: cannot read it: {e}"))?;
    head.truncate(n);
    let (interp, arg) = shebang(&head)?;
    let line = arg.as_ref().map_or_else(|| interp.clone(), |a| format!("{interp} {a}"));
    if !interp.starts_with('/') {
        return Err(format!(
            "its #! interpreter {interp:?} is not an absolute path (it would be looked for in the plugin's working directory): it would fail to start"
        ));
    }
    runnable(Path::new(&interp)).map_err(|why| format!("its #! interpreter {interp} {why}: it would fail to start"))?;
    let mut runs = interp.clone();
    let mut detail = format!("not run: a script for {line}");
    if Path::new(&interp).file_name().is_some_and(|n| n == "env") {
        if let Some(program) = env_program(arg.as_deref())? {
            let found = in_plugin_path(&program).ok_or_else(|| {
                format!(
                    "its #! line runs {line}, and there is no {program:?} in the plugin's PATH ({}): it would fail to start",
                    crate::plugin::remote::PLUGIN_PATH
                )
            })?;
            let _ = write!(detail, " ({program} is {})", found.display());
            runs = found.to_string_lossy().into_owned();
        }
    }
    let python = file.ends_with(".py")
        || Path::new(&runs).file_name().is_some_and(|n| n.to_string_lossy().starts_with("python"));
    if !python {
        return Ok((Verdict::Ok, detail));
    }
    let mut text = vec![0u8; MAX_SCANNED];
    let n = f.read_at(&mut text, 0).map_err(|e| format!("{file}: cannot read it: {e}"))?;
    text.truncate(n);
    let text = String::from_utf8_lossy(&text);
    let (verdict, note) = sdk_note(&text, dir, &runs);
    if !note.is_empty() {
        let _ = write!(detail, "; {note}");
    }
    Ok((verdict, detail))
}

/// What Linux reads of a file to find its `#!` line (`BINPRM_BUF_SIZE`).
const SHEBANG_BUF: usize = 256;
/// How much of a script is looked at for its imports.
const MAX_SCANNED: usize = 1 << 20;

/// A script's interpreter and optional argument, as Linux's `binfmt_script` takes them from
/// its first [`SHEBANG_BUF`] bytes (`head`): the line after `#!` up to a newline, blanks
/// around it dropped; the interpreter up to the first space or tab; the rest, if any, is ONE
/// argument (`#!/usr/bin/env python3 -u` gives env the single argument `python3 -u`). A line
/// longer than the buffer is cut there, unless the cut falls in the interpreter's path: then
/// `execve` fails, as it does for a file that is neither a script nor a binary.
fn shebang(head: &[u8]) -> Result<(String, Option<String>), String> {
    const NOT_RUNNABLE: &str = "neither an ELF binary nor a script starting with #!: it would fail to start";
    if !head.starts_with(b"#!") {
        return Err(NOT_RUNNABLE.into());
    }
    let blank = |c: &u8| *c == b' ' || *c == b'\t';
    // The kernel's buffer is zero-filled past the file's end and its last byte is never used.
    let usable = &head[..head.len().min(SHEBANG_BUF - 1)];
    let end = match usable.iter().position(|c| *c == b'\n') {
        Some(i) => i,
        None if head.len() < SHEBANG_BUF => usable.len(),
        None => {
            let Some(start) = usable[2..].iter().position(|c| !blank(c)).map(|i| i + 2) else {
                return Err("its #! line is blank: it would fail to start".into());
            };
            if !usable[start..].iter().any(|c| blank(c) || *c == 0) {
                return Err(format!(
                    "its #! line is longer than the {SHEBANG_BUF} bytes Linux reads of it, and cut in its interpreter's path: it would fail to start"
                ));
            }
            usable.len()
        }
    };
    // A NUL ends the strings the kernel passes on.
    let line = &usable[2..end];
    let line = line.split(|c| *c == 0).next().unwrap_or_default();
    let start = line.iter().position(|c| !blank(c)).unwrap_or(line.len());
    let stop = line.iter().rposition(|c| !blank(c)).map_or(start, |i| i + 1);
    let line = &line[start..stop.max(start)];
    if line.is_empty() {
        return Err("its #! line names no interpreter: it would fail to start".into());
    }
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    match line.iter().position(blank) {
        None => Ok((text(line), None)),
        Some(i) => {
            let arg = &line[i..];
            let arg = &arg[arg.iter().position(|c| !blank(c)).unwrap_or(arg.len())..];
            Ok((text(&line[..i]), (!arg.is_empty()).then(|| text(arg))))
        }
    }
}

/// The program `env` would run for a `#!/usr/bin/env ARG` line: `None` when that cannot be
/// told without running it (options other than `-S`), `Err` when env would look for a program
/// whose name holds a blank (Linux gives it the rest of the line as one argument).
fn env_program(arg: Option<&str>) -> Result<Option<String>, String> {
    let Some(arg) = arg else {
        return Err("its #! line runs env with no program: it would not start the plugin".into());
    };
    if let Some(split) = arg.strip_prefix("-S") {
        return Ok(split.split_whitespace().find(|w| !w.starts_with('-') && !w.contains('=')).map(String::from));
    }
    if arg.starts_with('-') {
        return Ok(None);
    }
    if arg.contains([' ', '\t', '\r']) {
        return Err(format!(
            "its #! line gives env the one argument {arg:?} (Linux passes the rest of the line as one), so env would look for a program of that name: it would fail to start (use env -S, or name the interpreter's path)"
        ));
    }
    Ok(Some(arg.to_string()))
}

/// Where `program` is for the plugin's process: a path as it is, a bare name looked up in the
/// `PATH` the daemon gives plugins.
fn in_plugin_path(program: &str) -> Option<std::path::PathBuf> {
    if program.contains('/') {
        return runnable(Path::new(program)).is_ok().then(|| Path::new(program).to_path_buf());
    }
    crate::plugin::remote::PLUGIN_PATH.split(':').map(|d| Path::new(d).join(program)).find(|p| runnable(p).is_ok())
}

/// `Ok` when `path` (followed) is a regular file with an execute bit; otherwise why not, as
/// the rest of a sentence naming it.
fn runnable(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    match fs::metadata(path) {
        Ok(m) if !m.is_file() => Err("is not a regular file".into()),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => Err("is not executable".into()),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err("does not exist".into()),
        Err(e) => Err(format!("cannot be looked at ({e})")),
    }
}

/// The SDK's module, as a Python plugin imports it.
const SDK_FILE: &str = "binance_syncd.py";

/// Whether the SDK a Python plugin's `text` imports (`import binance_syncd`, `from
/// binance_syncd import ...`) is where its Python (`python`) will find it. `run` starts a
/// private copy in the state directory with `PYTHONPATH` naming the plugin folder, so
/// `binance_syncd.py` in the folder is found; one in the folder above (where `demo` puts it)
/// only by a script that looks there itself through `SYNCD_PLUGIN_DIR`, as `examples/grid.py`
/// does.
/// Installed with pip for that Python it is found anyway, which `check` cannot see without
/// running Python: so a warning, not a failure. Empty for a script that does not import it.
fn sdk_note(text: &str, dir: &Path, python: &str) -> (Verdict, String) {
    let imports = text.lines().map(str::trim_start).any(|l| {
        ["import binance_syncd", "from binance_syncd"]
            .iter()
            .any(|p| l.strip_prefix(p).is_some_and(|rest| !rest.starts_with(|c: char| c.is_alphanumeric() || c == '_')))
    });
    if !imports {
        return (Verdict::Ok, String::new());
    }
    const HOW: &str = "see plugins/python/README.md, \"Installing\"";
    let candidates = [dir.to_path_buf(), dir.join("..")];
    let Some(found) = candidates.iter().map(|d| d.join(SDK_FILE)).find(|p| p.is_file()) else {
        return (
            Verdict::Warn,
            format!(
                "imports binance_syncd, and there is no {SDK_FILE} in the plugin folder: unless the SDK is installed for {python} (pip install ./plugins/python), it fails to start; or copy plugins/python/{SDK_FILE} to {} (mode 0644) ({HOW})",
                dir.display()
            ),
        );
    };
    if found != dir.join(SDK_FILE) && !text.contains("SYNCD_PLUGIN_DIR") {
        return (
            Verdict::Warn,
            format!(
                "imports binance_syncd, which is only in the folder above ({}): Python finds it there only if the script puts that folder on sys.path itself (through SYNCD_PLUGIN_DIR), unless the SDK is installed for {python} (pip install ./plugins/python); or copy it into the plugin folder ({HOW})",
                found.display()
            ),
        );
    }
    if !crate::plugin::trust::file_trusted(&found, crate::plugin::euid()) {
        return (
            Verdict::Warn,
            format!(
                "imports binance_syncd from {}, which is not trusted as a plugin file is (whoever may write it runs code in the plugin): make it owned by root or the daemon's user, mode 0644",
                found.display()
            ),
        );
    }
    (Verdict::Ok, format!("imports binance_syncd: {} found", found.display()))
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
    fn a_shebang_line_is_read_as_linux_reads_it() {
        let sh = |interp: &str, arg: Option<&str>| Ok((interp.to_string(), arg.map(String::from)));
        assert_eq!(shebang(b"#!/bin/sh\nexit 0\n"), sh("/bin/sh", None));
        assert_eq!(shebang(b"#! \t/usr/bin/env  python3 -u \t\nx"), sh("/usr/bin/env", Some("python3 -u")));
        assert_eq!(shebang(b"#!/usr/bin/env python3\r\n"), sh("/usr/bin/env", Some("python3\r")));
        assert_eq!(shebang(b"#!/bin/sh"), sh("/bin/sh", None), "no newline in a short file");
        assert!(shebang(b"#!  \n").unwrap_err().contains("names no interpreter"));
        assert!(shebang(b"print('hi')\n").unwrap_err().contains("neither an ELF binary nor a script"));
        assert!(shebang(b"").unwrap_err().contains("neither"));
        // Longer than the kernel's buffer: cut in the argument it still runs, cut in the path not.
        let mut long = b"#!/bin/sh ".to_vec();
        long.resize(400, b'a');
        assert_eq!(shebang(&long[..SHEBANG_BUF]).unwrap().0, "/bin/sh");
        let mut long = b"#!/".to_vec();
        long.resize(400, b'a');
        assert!(shebang(&long[..SHEBANG_BUF]).unwrap_err().contains("cut in its interpreter's path"));
    }

    #[test]
    fn env_gets_one_argument_and_the_program_it_names_is_looked_up_in_the_plugin_path() {
        assert_eq!(env_program(Some("python3")), Ok(Some("python3".into())));
        assert_eq!(env_program(Some("-S python3 -u")), Ok(Some("python3".into())));
        assert_eq!(env_program(Some("-i")), Ok(None));
        assert!(env_program(Some("python3 -u")).unwrap_err().contains("one argument \"python3 -u\""));
        assert!(env_program(Some("python3\r")).is_err());
        assert!(env_program(None).is_err());
        assert!(in_plugin_path("sh").is_some_and(|p| p.ends_with("bin/sh")), "{:?}", in_plugin_path("sh"));
        assert_eq!(in_plugin_path("/bin/sh"), Some(Path::new("/bin/sh").to_path_buf()));
        assert_eq!(in_plugin_path("no-such-program-here"), None);
        assert_eq!(runnable(Path::new("/no/such/file")), Err("does not exist".into()));
        assert_eq!(runnable(Path::new("/")), Err("is not a regular file".into()));
    }

    #[test]
    fn a_python_plugin_that_imports_the_sdk_is_told_where_it_is_found() {
        let dir = std::env::temp_dir().join(format!("syncd-check-sdk-{}", std::process::id()));
        let plugins = dir.join("plugins");
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&plugins).unwrap();
        let on_path = "import os, sys\nsys.path.insert(0, os.environ[\"SYNCD_PLUGIN_DIR\"])\n";
        let py = "/usr/bin/python3";
        assert_eq!(sdk_note("import json\nimport binance_syncd_extra\n", &plugins, py), (Verdict::Ok, String::new()));
        let (v, note) = sdk_note(&format!("{on_path}from binance_syncd import Strategy\n"), &plugins, py);
        assert!(v == Verdict::Warn && note.contains("no binance_syncd.py in the plugin folder"), "{note}");
        assert!(note.contains("pip install ./plugins/python") && note.contains("plugins/python/README.md"), "{note}");
        fs::write(plugins.join(SDK_FILE), "X = 1\n").unwrap();
        let (v, note) = sdk_note(&format!("{on_path}    import binance_syncd as sdk\n"), &plugins, py);
        assert_eq!(v, Verdict::Ok, "{note}");
        assert!(note.contains("binance_syncd.py found"), "{note}");
        // In the plugin folder: found through PYTHONPATH, whatever the script does.
        let (v, note) = sdk_note("import binance_syncd\n", &plugins, py);
        assert_eq!(v, Verdict::Ok, "{note}");
        // Only in the folder above: found only by a script that looks there itself.
        fs::remove_file(plugins.join(SDK_FILE)).unwrap();
        fs::write(dir.join(SDK_FILE), "X = 1\n").unwrap();
        let (v, note) = sdk_note("import binance_syncd\n", &plugins, py);
        assert!(v == Verdict::Warn && note.contains("only in the folder above"), "{note}");
        let (v, note) = sdk_note(&format!("{on_path}import binance_syncd\n"), &plugins, py);
        assert_eq!(v, Verdict::Ok, "{note}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn modules_beside_program_plugins_warn_when_loose_or_run_at_start_up() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("syncd-check-modules-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("pkg.py")).unwrap();
        let put = |file: &str, mode: u32| {
            fs::write(dir.join(file), "X = 1\n").unwrap();
            fs::set_permissions(dir.join(file), fs::Permissions::from_mode(mode)).unwrap();
        };
        put("helper.py", 0o666);
        put("grouped.pyc", 0o664);
        put("fine.py", 0o644);
        put("sitecustomize.py", 0o644);
        put("usercustomize.py", 0o646);
        // None of these is a module Python imports, or they are judged elsewhere.
        put(".hidden.py", 0o666);
        put("strat.py", 0o777);
        put("strat.conf", 0o666);
        put("notes.txt", 0o666);
        put("helper.py.bak", 0o666);
        std::os::unix::fs::symlink("/etc/hostname", dir.join("linked.py")).unwrap();
        let euid = crate::plugin::euid();
        let rows = module_rows(&dir, euid);
        let what: Vec<&str> = rows.iter().map(|r| r.what.as_str()).collect();
        assert_eq!(
            what,
            ["module grouped.pyc", "module helper.py", "module sitecustomize.py", "module usercustomize.py"],
            "{rows:?}"
        );
        assert!(rows.iter().all(|r| r.verdict == Verdict::Warn), "{rows:?}");
        let helper = &rows[1].detail;
        assert!(helper.starts_with("helper.py is writable by group or others (mode 0666)"), "{helper}");
        assert!(helper.contains("PYTHONPATH") && helper.contains("runs code in them"), "{helper}");
        assert!(helper.contains("chown") && helper.contains("chmod 0644"), "{helper}");
        assert!(!helper.contains("start-up"), "{helper}");
        let site = &rows[2].detail;
        assert!(site.starts_with("Python imports sitecustomize at start-up in every Python plugin"), "{site}");
        assert!(!site.contains("writable"), "trusted, so only the start-up: {site}");
        let user = &rows[3].detail;
        assert!(user.contains("(mode 0646)") && user.contains("imports usercustomize at start-up"), "{user}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn modules_and_packages_in_subfolders_are_judged_too() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("syncd-check-packages-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("lib/__pycache__")).unwrap();
        fs::create_dir_all(dir.join("ok")).unwrap();
        fs::create_dir_all(dir.join(".git")).unwrap();
        let put = |file: &str, mode: u32| {
            fs::write(dir.join(file), "X = 1\n").unwrap();
            fs::set_permissions(dir.join(file), fs::Permissions::from_mode(mode)).unwrap();
        };
        fs::set_permissions(dir.join("lib"), fs::Permissions::from_mode(0o777)).unwrap();
        put("lib/inner.py", 0o666);
        put("lib/__pycache__/inner.cpython-311.pyc", 0o666);
        put("lib/sitecustomize.py", 0o644); // not on the path itself: no start-up row
        put("ok/good.py", 0o644);
        put(".git/hook.py", 0o666); // hidden: not walked
        let rows = module_rows(&dir, crate::plugin::euid());
        let what: Vec<&str> = rows.iter().map(|r| r.what.as_str()).collect();
        assert_eq!(
            what,
            ["folder lib/", "module lib/__pycache__/inner.cpython-311.pyc", "module lib/inner.py"],
            "{rows:?}"
        );
        assert!(rows[0].detail.starts_with("lib/ is writable by group or others"), "{}", rows[0].detail);
        assert!(rows[0].detail.contains("adds code to them"), "{}", rows[0].detail);
        assert!(rows[2].detail.starts_with("lib/inner.py is writable"), "{}", rows[2].detail);
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
