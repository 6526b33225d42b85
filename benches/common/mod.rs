//! What the benches share (they cannot import `tests/it/util.rs`).

use binance_syncd_paper::{PaperExchange, DEMO_API_KEY, DEMO_API_SECRET};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

// The binary's paper REST client (src/paper_client.rs), included as the tests do.
#[path = "../../src/paper_client.rs"]
#[allow(dead_code)] // only the benches that need a daemon client call it
mod paper_client;
#[allow(unused_imports)]
pub use paper_client::paper_client;

/// The environment every bench's daemon needs against `ex`, with its state and fill log in
/// `dir`; each bench adds its own settings.
#[allow(dead_code)] // the sync bench builds its own environment
pub fn daemon_env(ex: &PaperExchange, dir: &Path, symbols: &str) -> Vec<(&'static str, String)> {
    vec![
        ("BINANCE_API_KEY", DEMO_API_KEY.to_string()),
        ("BINANCE_API_SECRET", DEMO_API_SECRET.to_string()),
        ("SYNCD_REST_URL", ex.rest_url()),
        ("SYNCD_WS_URL", ex.ws_url()),
        ("SYNCD_SYMBOLS", symbols.to_string()),
        ("SYNCD_STATE_DIR", dir.join("state").display().to_string()),
        ("SYNCD_FILL_LOG", dir.join("fills.jsonl").display().to_string()),
    ]
}

/// The `q` percentile of `sorted` by the project's one rank rule
/// ([`binance_syncd::registry::nearest_rank`], as `/metrics` histograms use); zero for an empty
/// sample, so a bench row that measured nothing prints 0 instead of panicking.
#[allow(dead_code)] // not every bench prints percentiles
pub fn percentile(sorted: &[std::time::Duration], q: f64) -> std::time::Duration {
    binance_syncd::registry::percentile(sorted, q).unwrap_or_default()
}

/// The target directory this bench runs from (`<target>/release/deps/<bench>`).
#[allow(dead_code)]
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("exe");
    exe.parent().and_then(|p| p.parent()).and_then(|p| p.parent()).expect("target dir").to_path_buf()
}

/// Builds the test plugin (release) with a version string and returns a private copy.
#[allow(dead_code)]
pub fn build(version: &str) -> PathBuf {
    let target = target_dir();
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--release", "-p", "test-plugin", "--target-dir"])
        .arg(&target)
        .env("SYNCD_TEST_PLUGIN_VERSION", version)
        .status()
        .expect("cargo build");
    assert!(status.success(), "cargo build -p test-plugin");
    let copy = std::env::temp_dir().join(format!("syncd-bench-plugin-{}-{version}.so", std::process::id()));
    std::fs::copy(target.join("release").join("libtest_plugin.so"), &copy).expect("copy");
    copy
}

/// Installs `so` as `dir/NAME.so`: a temporary file, then `rename`.
#[allow(dead_code)]
pub fn install(so: &Path, dir: &Path, name: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::copy(so, &tmp).expect("copy");
    std::fs::rename(&tmp, dir.join(format!("{name}.so"))).expect("rename");
}

/// Set in the floor child's environment (see [`bare_process`]).
const FLOOR_CHILD: &str = "PLUGIN_BENCH_FLOOR_CHILD";

/// The floor of an isolated plugin's wake: a process asleep in `read` on its end of a socket
/// pair (the plugin channel's kind), sent a wall-clock timestamp `n` times 3 ms apart by this
/// one; it answers each with how long after the stamp it woke. The same bench run again with
/// [`FLOOR_CHILD`] set is that process: its `main` starts with [`floor_child_if_asked`]. Sorted.
#[allow(dead_code)]
pub fn bare_process(n: usize) -> Vec<Duration> {
    use std::io::{Read, Write};
    let (mut ours, theirs) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    let mut child = Command::new(std::env::current_exe().expect("this bench"))
        .env(FLOOR_CHILD, "1")
        .stdin(std::process::Stdio::from(std::os::fd::OwnedFd::from(theirs.try_clone().expect("dup"))))
        .stdout(std::process::Stdio::from(std::os::fd::OwnedFd::from(theirs)))
        .spawn()
        .expect("floor child");
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        std::thread::sleep(Duration::from_millis(3));
        let at = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).expect("clock").as_nanos() as u64;
        ours.write_all(&at.to_le_bytes()).expect("send");
        let mut back = [0u8; 8];
        ours.read_exact(&mut back).expect("answer");
        lat.push(Duration::from_nanos(u64::from_le_bytes(back)));
    }
    drop(ours);
    let _ = child.wait();
    lat.sort();
    lat
}

/// In the floor child (see [`bare_process`]): answers every stamp on stdin with how long after
/// it this process woke, until stdin closes, and returns true; elsewhere returns false at once.
#[allow(dead_code)]
pub fn floor_child_if_asked() -> bool {
    use std::io::{Read, Write};
    if std::env::var_os(FLOOR_CHILD).is_none() {
        return false;
    }
    let (mut input, mut output) = (std::io::stdin().lock(), std::io::stdout().lock());
    let mut at = [0u8; 8];
    while input.read_exact(&mut at).is_ok() {
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).expect("clock").as_nanos() as u64;
        let woke = now.saturating_sub(u64::from_le_bytes(at));
        if output.write_all(&woke.to_le_bytes()).and_then(|_| output.flush()).is_err() {
            break;
        }
    }
    true
}

/// A fresh `<tmp>/syncd-bench-<bench>-<pid>-<name>/` with `plugins/stamp.conf` (the test
/// plugin in `stamp` mode, recording to `stamp.rec` beside it) and, if given, `so` installed
/// as `plugins/stamp.so`: (the directory, its plugin folder).
#[allow(dead_code)]
pub fn stamp_dir(bench: &str, name: &str, so: Option<&Path>) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("syncd-bench-{bench}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).expect("dir");
    std::fs::write(plugins.join("stamp.conf"), format!("record = {}\nmode = stamp\n", dir.join("stamp.rec").display()))
        .expect("conf");
    if let Some(so) = so {
        install(so, &plugins, "stamp");
    }
    (dir, plugins)
}

/// This process's resident memory, kB.
#[allow(dead_code)]
pub fn own_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:")?.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
