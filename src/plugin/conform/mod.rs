//! `binance-syncd conformance FILE`: the daemon's side of the plugin protocol
//! (`docs/plugin-protocol.md`) played against one plugin, a program or a `.so`, started
//! exactly as `run` starts it (the plugin-host role, confined, with the same environment), and
//! driven through every message and every answer the daemon can give it. Each rule comes out
//! kept, broken (saying what the plugin did instead), or not exercised (the plugin never sent
//! that kind of message: a strategy that never cancels cannot be judged on its cancels).
//!
//! A third party checks a plugin with it before installing it; the tests run it against the
//! Python SDK and against the `.so` host with a C plugin (`tests/conformance/`). Nothing here
//! trades, needs configuration or touches a state directory: the plugin runs in a temporary
//! folder, and it is sent made-up fills, outcomes and books.

mod message;
mod peer;
mod sample;
mod script;

use peer::Target;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const USAGE: &str = "\
binance-syncd conformance — check a strategy plugin against the plugin protocol

USAGE:
    binance-syncd conformance FILE [--conf NAME.conf] [--stall-s N]

FILE is a plugin as SYNCD_PLUGIN_DIR would hold it: a program (an executable file, such as a
Python script with a #! line) or a shared library (NAME.so). It is started as `run` starts a
plugin and played every message of docs/plugin-protocol.md: hello (of this protocol and of an
unknown one), start with a large snapshot, price, balance, tick, fills (new, another client's,
replayed), an order outcome of every kind, book and trade if it asks for them, BUSY and
REFUSED answers to its intents, rules of a traded symbol and of one not traded, stop, the end
of its channel, and a restart from its cursor. Each rule is printed as ok, FAIL (with what it
did instead) or -- (not exercised). Its stderr is shown as it comes.

OPTIONS:
    --conf PATH    settings sent in its start call (default: NAME.conf beside FILE, if any)
    --stall-s N    the longest a call may take (default: SYNCD_PLUGIN_STALL_S, else 5)
    -h, --help     Print this help

EXIT STATUS: 0 every rule kept, 1 a rule broken, 2 bad usage.
";

/// How a rule came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Ok,
    Fail,
    /// Not exercised, or not applicable to this plugin.
    Skip,
}

/// One rule's outcome: `name` (what was checked), `detail` (what was seen).
#[derive(Debug, Clone)]
struct Check {
    verdict: Verdict,
    name: String,
    detail: String,
}

/// The run's own temporary folder (`TMPDIR/syncd-conformance-RANDOM`, 0700, made new: never
/// one that was there before), removed with everything in it when the run ends.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Scratch, String> {
        use std::os::unix::fs::DirBuilderExt;
        let path = std::env::temp_dir().join(format!("syncd-conformance-{:016x}", crate::sys::random_u64()));
        // Not recursive: it fails if anything, a link included, is already there.
        std::fs::DirBuilder::new().mode(0o700).create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Scratch(path))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The command's `main`: `args` are those after `conformance`. Returns the exit code.
pub fn main(args: &[String]) -> i32 {
    match args {
        [flag] if matches!(flag.as_str(), "-h" | "--help") => {
            print!("{USAGE}");
            return 0;
        }
        _ => {}
    }
    let scratch = match Scratch::new() {
        Ok(s) => s,
        Err(why) => {
            eprintln!("binance-syncd conformance: cannot make its temporary folder: {why}");
            return 1;
        }
    };
    let target = match target(args, &scratch.0) {
        Ok(t) => t,
        Err(why) => {
            eprintln!("binance-syncd conformance: {why}\n\n{USAGE}");
            return 2;
        }
    };
    let kind = if target.program { "a program" } else { "a shared library, through the plugin host" };
    println!("conformance of plugin {} ({}, {kind}):", target.name, target.file.display());
    let checks = script::run(&target);
    drop(scratch);
    for c in &checks {
        let mark = match c.verdict {
            Verdict::Ok => "ok  ",
            Verdict::Fail => "FAIL",
            Verdict::Skip => "--  ",
        };
        println!("  {mark}  {}: {}", c.name, c.detail);
    }
    let count = |v: Verdict| checks.iter().filter(|c| c.verdict == v).count();
    let (ok, failed, skipped) = (count(Verdict::Ok), count(Verdict::Fail), count(Verdict::Skip));
    println!("{ok} ok, {failed} failed, {skipped} not exercised");
    i32::from(failed > 0)
}

/// The plugin named by the arguments, with its settings, its private copy and working folder
/// in `scratch`.
fn target(args: &[String], scratch: &Path) -> Result<Target, String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mut file = None;
    let mut conf = None;
    let mut stall = std::env::var("SYNCD_PLUGIN_STALL_S").ok();
    let mut rest = args;
    while let [first, tail @ ..] = rest {
        match (first.as_str(), tail) {
            ("--conf", [value, tail @ ..]) => (conf, rest) = (Some(PathBuf::from(value)), tail),
            ("--stall-s", [value, tail @ ..]) => (stall, rest) = (Some(value.clone()), tail),
            (flag, _) if flag.starts_with('-') => return Err(format!("unknown option or missing value: {flag}")),
            (path, _) if file.is_none() => (file, rest) = (Some(PathBuf::from(path)), tail),
            (extra, _) => return Err(format!("one plugin file at a time (also given: {extra})")),
        }
    }
    let file = file.ok_or("no plugin file given")?;
    // Read as the daemon reads SYNCD_PLUGIN_STALL_S.
    let stall = match stall {
        None => Duration::from_secs(5),
        Some(text) => crate::config::seconds(&text)
            .ok_or_else(|| format!("the stall limit must be a number of seconds from 0.001 to 86400, not {text:?}"))?,
    };
    let file = std::fs::canonicalize(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    let meta = std::fs::metadata(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    let file_name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let Some((name, kind)) = super::exec::plugin_name(&file_name, meta.mode()) else {
        return Err(format!(
            "{} is not a plugin: a program needs an execute bit (chmod 0755) and a library ends in .so",
            file.display()
        ));
    };
    let dir = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let conf = conf.unwrap_or_else(|| dir.join(format!("{name}.conf")));
    let settings = match std::fs::read_to_string(&conf) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("{}: {e}", conf.display())),
    };
    // Its settings as `run` takes them: refused as `run` would refuse them, else its limits
    // and tag.
    let options = super::settings::Options::of_plugin(&name, &file_name, kind, &settings)?;
    let (tag, _) = super::settings::tag_of(&name, &settings);
    // `run` runs a private copy (0700) from its state directory, not the installed file: so
    // does this, so that a plugin finding its files through its own path is caught here.
    let images = scratch.join("images");
    std::fs::create_dir(&images).map_err(|e| format!("{}: {e}", images.display()))?;
    let ext = file.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
    let image = images.join(format!("{name}-{}-1{ext}", std::process::id()));
    std::fs::copy(&file, &image).map_err(|e| format!("cannot copy {} to {}: {e}", file.display(), image.display()))?;
    std::fs::set_permissions(&image, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("{}: {e}", image.display()))?;
    Ok(Target {
        file,
        image,
        dir,
        workdir: scratch.join("run").join(&name),
        name,
        program: kind == super::exec::Kind::Program,
        settings,
        stall,
        limits: options.limits,
        tag,
    })
}
