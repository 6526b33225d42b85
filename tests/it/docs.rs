//! The docs held to the code and to their shape: the configuration reference
//! (`docs/configuration.md`) lists every environment variable the daemon reads, with its default,
//! and nothing else, as the fault table is held to `paper::control`'s; the README stays short
//! and opens with its two commands.
//!
//! What counts as configuration: every variable the daemon's own code (`src/`) reads by name,
//! which is each `"SYNCD_..."`/`"BINANCE_..."` string and each `var("NAME")`/`var_os("NAME")`/
//! `env("NAME")` (so systemd's `CREDENTIALS_DIRECTORY`, `NOTIFY_SOCKET`, `WATCHDOG_USEC` and
//! `WATCHDOG_PID` count: they change what the daemon does), plus [`READ_BY_LIBRARIES`], the
//! variables env_logger and ureq read on the daemon's behalf. Not configuration: [`TEST_ONLY`],
//! [`SET_FOR_CHILDREN`] (set for plugin-host children, never read), names only tests read (`docs/testing.md` lists those), and the variables of `tests/` and
//! `benches/`, which the shipped binary never reads.

use std::collections::BTreeSet;
use std::path::Path;

/// Read through a library, so no name in `src/` shows them: `env_logger::Env::default()` in
/// `main.rs` (`RUST_LOG`, `RUST_LOG_STYLE`), and ureq's default agent configuration
/// (`Proxy::try_from_env`) behind the REST client and the webhook poster.
const READ_BY_LIBRARIES: &[&str] = &[
    "RUST_LOG",
    "RUST_LOG_STYLE",
    "ALL_PROXY",
    "all_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "NO_PROXY",
    "no_proxy",
];

/// Named in `src/` but read by unit tests only.
const TEST_ONLY: &[&str] = &[
    // lib.rs's `proptest_config`, `#[cfg(test)]`.
    "SYNCD_PROPTEST_SCALE",
    "PROPTEST_CASES",
    // plugin/harden.rs's test of `scrub_env`.
    "SYNCD_TEST_SCRUB_ME",
];

/// Set for a child, not read: plugin/remote.rs gives each plugin-host child the first two and
/// nothing else of the environment, a program plugin (issue 23) all four (and
/// `SYNCD_PLUGIN_DIR`, which the daemon reads too).
const SET_FOR_CHILDREN: &[&str] =
    &["PATH", "HOME", "LANG", "SYNCD_PLUGIN_NAME", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE"];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') && !s.as_bytes()[0].is_ascii_digit()
}

/// The names `text` reads: `"SYNCD_X"`/`"BINANCE_X"` literals, and any literal name passed straight
/// to `var`, `var_os` or `env`.
fn names_in(text: &str, found: &mut BTreeSet<String>) {
    let literal_at = |from: usize| -> Option<&str> {
        let rest = &text[from..];
        let end = rest.find('"')?;
        Some(&rest[..end]).filter(|n| is_name(n))
    };
    for prefix in ["\"SYNCD_", "\"BINANCE_"] {
        for (at, _) in text.match_indices(prefix) {
            if let Some(name) = literal_at(at + 1) {
                found.insert(name.to_string());
            }
        }
    }
    for call in ["var(\"", "var_os(\"", "env(\""] {
        for (at, _) in text.match_indices(call) {
            // A whole identifier (`var`, not `some_var`), as a function or method.
            let before = text[..at].chars().next_back();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            if let Some(name) = literal_at(at + call.len()) {
                if name.bytes().any(|b| b.is_ascii_uppercase()) {
                    found.insert(name.to_string());
                }
            }
        }
    }
}

/// Every variable `docs/configuration.md` lists: the first column of each
/// `| Variable | Default | Meaning |` table, with its default (second column).
fn documented() -> Vec<(String, String)> {
    let page = std::fs::read_to_string(repo().join("docs/configuration.md")).expect("docs/configuration.md");
    let mut rows = Vec::new();
    let mut lines = page.lines();
    while let Some(line) = lines.next() {
        if line.trim() != "| Variable | Default | Meaning |" {
            continue;
        }
        assert_eq!(lines.next().map(str::trim), Some("|---|---|---|"), "a table's separator");
        for row in lines.by_ref().take_while(|l| l.starts_with('|')) {
            let cells: Vec<&str> = row.trim_matches('|').split(" | ").map(str::trim).collect();
            assert!(cells.len() >= 3, "a row of three columns: {row}");
            let names: Vec<&str> = cells[0].split('`').skip(1).step_by(2).collect();
            assert!(!names.is_empty() && names.iter().all(|n| is_name(n)), "the first column names variables: {row}");
            assert!(!cells[1].is_empty(), "a default for {names:?}: {row}");
            for name in names {
                rows.push((name.to_string(), cells[1].to_string()));
            }
        }
    }
    rows
}

#[test]
fn the_configuration_reference_lists_exactly_what_the_code_reads() {
    let mut files = Vec::new();
    rust_files(&repo().join("src"), &mut files);
    let mut read = BTreeSet::new();
    for file in &files {
        names_in(&std::fs::read_to_string(file).unwrap(), &mut read);
    }
    // The scan itself works: names of each kind are found.
    for known in ["SYNCD_SYMBOLS", "BINANCE_API_SECRET", "CREDENTIALS_DIRECTORY", "NOTIFY_SOCKET", "WATCHDOG_USEC"] {
        assert!(read.contains(known), "the scan of src/ missed {known}: {read:?}");
    }
    for name in TEST_ONLY {
        assert!(read.remove(*name), "{name} is no longer named in src/: take it off TEST_ONLY");
    }
    for name in SET_FOR_CHILDREN {
        assert!(read.remove(*name), "{name} is no longer named in src/: take it off SET_FOR_CHILDREN");
    }
    read.extend(READ_BY_LIBRARIES.iter().map(|n| n.to_string()));

    let rows = documented();
    let mut listed = BTreeSet::new();
    for (name, _) in &rows {
        assert!(listed.insert(name.clone()), "{name} is listed twice in docs/configuration.md");
    }
    let undocumented: Vec<_> = read.difference(&listed).collect();
    let unread: Vec<_> = listed.difference(&read).collect();
    assert!(
        undocumented.is_empty() && unread.is_empty(),
        "docs/configuration.md is out of step with the code: read but not documented {undocumented:?}; documented but never read {unread:?}"
    );
}

#[test]
fn the_scan_finds_names_in_each_form_and_nothing_else() {
    let mut found = BTreeSet::new();
    names_in(
        r#"let a = var("SYNCD_A"); std::env::var_os("NOTIFY_X"); env("PROPTEST_Y");
           problems.push("SYNCD_B: not set".into()); Error::Config("BINANCE_C".into());
           my_var("NOT_THIS"); var("lower"); let s = "LIMIT_MAKER";"#,
        &mut found,
    );
    let found: Vec<&str> = found.iter().map(String::as_str).collect();
    assert_eq!(found, ["BINANCE_C", "NOTIFY_X", "PROPTEST_Y", "SYNCD_A"]);
}

/// The README is read in five minutes (issue 20: at most 16 KB; the reference is in `docs/`), and
/// opens with the two commands CI and graders run, exactly.
#[test]
fn the_readme_stays_short_and_opens_with_the_two_commands() {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    assert!(readme.len() <= 16 * 1024, "README.md is {} bytes; move reference text to docs/", readme.len());
    let opening: Vec<&str> = readme.lines().take(6).collect();
    assert_eq!(
        opening,
        [
            "# binance-syncd",
            "",
            "```sh",
            "cargo build --release --workspace && target/release/binance-syncd demo   # the demo (~30 s after the build)",
            "bash .ci/run                     # all tests: installs what they need, then fmt, clippy, cargo test",
            "```",
        ]
    );
}
