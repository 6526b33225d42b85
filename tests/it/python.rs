//! The paper exchange judged by others: independent Binance clients from PyPI (python-binance,
//! binance-connector, ccxt, websocket-client), unchanged, run by `tests/py/clients.py` against
//! `binance-syncd paper`; and its diff depth stream kept as a local order book by
//! binance-connector and python-binance (`tests/py/depth.py`).
//!
//! The clients live in a venv: `$SYNCD_PYENV`, else `target/pyenv` under the crate. When its
//! Python lacks the pinned packages of `tests/py/requirements.txt`, the venv is created with
//! `python3 -m venv` and filled with `pip install -r` (this needs PyPI). Missing Python or a
//! failed install fails the test with the reason; it never passes silently.
//!
//! `SYNCD_PYCLIENTS_ARGS` adds arguments to the script, e.g. `--skip ws` or `--only ccxt`.
//!
//! Also the Python SDK for strategy plugins (`plugins/python`): `tests/py/test_sdk.py`, which
//! plays the daemon's side of the plugin protocol, run with the venv's Python (else `python3`),
//! and a check that the SDK's sources are Python 3.9.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SCRIPT_DEADLINE: Duration = Duration::from_secs(120);

/// Exits 0 when every `name==version` pin of the requirements file is installed at that version;
/// otherwise prints what differs and exits 1.
const PINS_CHECK: &str = r##"
import sys
from importlib.metadata import version, PackageNotFoundError
bad = []
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if not line:
        continue
    name, _, want = line.partition("==")
    try:
        got = version(name)
    except PackageNotFoundError:
        got = None
    if got != want:
        bad.append(f"{name}: want {want}, have {got}")
print("\n".join(bad))
sys.exit(1 if bad else 0)
"##;

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn venv_dir() -> PathBuf {
    match std::env::var_os("SYNCD_PYENV") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => manifest_dir().join("target").join("pyenv"),
    }
}

/// `None` when the venv's Python has every pin; otherwise why not.
fn pins_missing(python: &Path, requirements: &Path) -> Option<String> {
    if !python.exists() {
        return Some(format!("{} does not exist", python.display()));
    }
    match Command::new(python).arg("-c").arg(PINS_CHECK).arg(requirements).output() {
        Ok(out) if out.status.success() => None,
        Ok(out) => Some(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Some(format!("cannot run {}: {e}", python.display())),
    }
}

fn run_step(what: &str, cmd: &mut Command) {
    eprintln!("python clients: {what}: {cmd:?}");
    let status = cmd.status().unwrap_or_else(|e| panic!("python clients: {what}: cannot run {cmd:?}: {e}"));
    assert!(status.success(), "python clients: {what} failed ({status}); see the output above");
}

/// The venv's Python, with the pinned clients installed.
fn ensure_venv() -> PathBuf {
    let venv = venv_dir();
    let python = venv.join("bin").join("python");
    let requirements = manifest_dir().join("tests/py/requirements.txt");
    let Some(why) = pins_missing(&python, &requirements) else { return python };
    eprintln!("python clients: venv {} is not ready ({why}); setting it up", venv.display());
    if !python.exists() {
        let mut cmd = Command::new("python3");
        cmd.args(["-m", "venv"]).arg(&venv);
        if let Err(e) = Command::new("python3").arg("--version").output() {
            panic!(
                "python clients: python3 is needed to create the venv {} but cannot be run: {e}. \
                 Install Python 3.11, or point SYNCD_PYENV at a venv with tests/py/requirements.txt installed.",
                venv.display()
            );
        }
        run_step("create venv", &mut cmd);
    }
    run_step(
        "install tests/py/requirements.txt (needs PyPI)",
        Command::new(&python).args(["-m", "pip", "install", "--disable-pip-version-check", "-r"]).arg(&requirements),
    );
    if let Some(why) = pins_missing(&python, &requirements) {
        panic!("python clients: after pip install the venv {} still lacks the pins: {why}", venv.display());
    }
    python
}

fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

#[test]
fn independent_python_clients_agree_with_the_paper_exchange() {
    run_clients(&[]);
}

/// `paper --tls`: binance-connector (requests) and websocket-client verify the printed
/// certificate as their CA bundle, over https:// and wss://.
#[test]
fn python_clients_trust_the_tls_paper_exchange_by_its_ca_file() {
    run_clients(&["--tls", "--only", "connector", "--only", "ws"]);
}

/// binance-connector's websocket stream client and REST depth, joined by the documented
/// procedure in `tests/py/depth.py`, keep a book equal to `GET /api/v3/depth` through a
/// `market_gap` they must detect and resync from; python-binance's `DepthCacheManager` too.
#[test]
fn independent_python_clients_keep_the_paper_exchanges_book_through_a_gap() {
    run_script("depth.py", &[], "");
}

fn run_clients(args: &[&str]) {
    run_script("clients.py", args, &std::env::var("SYNCD_PYCLIENTS_ARGS").unwrap_or_default());
}

/// Runs `tests/py/<name>` with the binary, `args` and the whitespace-separated `extra`; fails
/// with its output unless it exits 0 within the deadline.
fn run_script(name: &str, args: &[&str], extra: &str) {
    let python = ensure_venv();
    let script = manifest_dir().join("tests/py").join(name);
    let binary = env!("CARGO_BIN_EXE_binance-syncd");
    let started = Instant::now();
    let mut child = Command::new(&python)
        .arg(&script)
        .arg(binary)
        .args(args)
        .args(extra.split_whitespace())
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {} {}: {e}", python.display(), script.display()));
    let out = drain(child.stdout.take().expect("piped stdout"));
    let err = drain(child.stderr.take().expect("piped stderr"));
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the script") {
            break Some(status);
        }
        if started.elapsed() > SCRIPT_DEADLINE {
            let _ = child.kill(); // our own child; the script makes its paper subprocess die with it (PDEATHSIG)
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (out, err) = (out.join().unwrap_or_default(), err.join().unwrap_or_default());
    let output = format!("--- {name} stdout ---\n{out}--- {name} stderr ---\n{err}");
    match status {
        Some(s) if s.success() => eprintln!("{output}python clients ({name}): passed in {:.1?}", started.elapsed()),
        Some(s) => panic!("tests/py/{name} failed ({s}):\n{output}"),
        None => panic!("tests/py/{name} did not finish within {SCRIPT_DEADLINE:?}; killed:\n{output}"),
    }
}

/// The Python that runs the SDK's tests: the venv's when there is one (CI makes it, from its
/// Python 3.11), else `python3`. The SDK needs nothing but the standard library.
fn sdk_python() -> PathBuf {
    let venv = venv_dir().join("bin").join("python");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

/// Runs `python` with `args` in the crate's folder; panics with its output unless it exits 0
/// (a missing Python fails too: it never passes silently).
fn run_python(python: &Path, args: &[&str]) -> String {
    let out = Command::new(python)
        .args(args)
        .current_dir(manifest_dir())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} (Python 3.9 or newer is needed): {e}", python.display()));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{} {args:?} failed ({}):\n{text}", python.display(), out.status);
    text
}

/// The Python SDK (plugins/python/binance_syncd.py) and its grid example against a daemon
/// played by tests/py/test_sdk.py over a socket pair: handshake, fills acknowledged after the
/// callback, intents, typed refusals, floats refused, stray prints, EOF, exceptions, bounds.
#[test]
fn python_sdk_unit_tests_pass() {
    // As a script (it calls unittest.main()), not `-m unittest tests/py/...`: that imports it
    // as `tests.py.test_sdk`, which a package named `tests` in the venv would shadow.
    let out = run_python(&sdk_python(), &["tests/py/test_sdk.py", "-v"]);
    eprintln!("{out}");
}

/// The SDK promises Python 3.9: its sources parse with 3.9's grammar (no `match`, no
/// parenthesised context managers...), whatever Python runs the tests, and no annotation is an
/// `X | Y` union (valid grammar, but a TypeError when 3.9 evaluates it at import).
#[test]
fn python_sdk_sources_parse_as_python_3_9() {
    const CHECK: &str = r#"
import ast, sys
bad = []
for p in sys.argv[1:]:
    tree = ast.parse(open(p).read(), p, feature_version=(3, 9))
    for node in ast.walk(tree):
        notes = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            notes = [x.annotation for x in a.posonlyargs + a.args + a.kwonlyargs + [a.vararg, a.kwarg] if x]
            notes.append(node.returns)
        elif isinstance(node, ast.AnnAssign):
            notes = [node.annotation]
        for note in filter(None, notes):
            if any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.BitOr) for n in ast.walk(note)):
                bad.append("%s:%d: an X | Y annotation (Python 3.10+)" % (p, note.lineno))
print("\n".join(bad))
sys.exit(1 if bad else 0)
"#;
    run_python(
        &sdk_python(),
        &["-c", CHECK, "plugins/python/binance_syncd.py", "plugins/python/examples/grid.py", "tests/py/test_sdk.py"],
    );
}
