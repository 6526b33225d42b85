//! The shape of `src/` and `paper/src/` (issue 20): no import cycle of any length between the
//! files of either, and no paper code in the daemon's library.
//!
//! A folder module and its own descendants may use each other (`executor/mod.rs` and
//! `executor/intent.rs`); everything else must form layers. The check is hierarchical: at the
//! crate root every top-level module is one node (a folder with all its files), and an edge
//! `a → b` exists when any file of `a` names anything in `b`; inside each folder its children
//! are nodes in the same way. Every such graph must be acyclic. So `executor/intent.rs → metrics
//! → executor/mod.rs` is a cycle (executor → metrics → executor) even though the last step
//! lands in the folder's own file.
//!
//! "Names" means a path in code, not in comments: `crate::a::b::Item`, `use crate::{a, b::{c,
//! d}}` groups, and `super::` resolved from the file (and inline module) it is written in. A path
//! resolves to the deepest module it spells, and a module to its file. Re-exports are not
//! followed: a file naming `crate::config::FsyncPolicy` depends on `config`, wherever the type is
//! defined. The binary's own files (`main.rs` and the modules it declares) are a separate crate
//! above the library and are left out, and so are `#[cfg(test)]` modules: they are not in the
//! library that is built, and a unit test may reach up for a fixture.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type ModPath = Vec<String>;

/// One `crate::`/`super::` path found in a file, resolved to the module whose file it names.
struct Edge {
    from: ModPath,
    to: ModPath,
    file: String,
    line: usize,
}

/// The daemon's library and the paper exchange's crate, each checked on its own.
const ROOTS: [&str; 2] = ["src", "paper/src"];

#[test]
fn src_has_no_import_cycle() {
    for root in ROOTS {
        no_cycle_under(&Path::new(env!("CARGO_MANIFEST_DIR")).join(root));
    }
}

fn no_cycle_under(src: &Path) {
    let src = src.to_path_buf();
    let files = library_files(&src);
    assert!(files.len() > 10, "found only {} files under {}", files.len(), src.display());
    let modules: BTreeSet<ModPath> = files.keys().cloned().collect();
    let mut edges = Vec::new();
    for (module, path) in &files {
        let text = std::fs::read_to_string(path).expect("read a source file");
        let rel = path.strip_prefix(&src).unwrap_or(path).display().to_string();
        for (line, target) in named_paths(module, &text) {
            if let Some(to) = deepest_module(&modules, &target) {
                edges.push(Edge { from: module.clone(), to, file: rel.clone(), line });
            }
        }
    }
    let cycles = cycles(&modules, &edges);
    assert!(
        cycles.is_empty(),
        "import cycles between the files of {} (a folder module and its own children may use \
         each other; nothing else may go round):\n{}",
        src.display(),
        cycles.join("\n")
    );
}

/// The daemon's library links no paper code (issue 20): the paper exchange, its certificate
/// crates and the demo are the binary's (src/main.rs) and the tests'. A library file outside
/// its `#[cfg(test)]` part names none of them.
/// One role per file (issue 20): every source file of the daemon, the paper exchange and the
/// SDK stays under this many lines before its `#[cfg(test)]` module (tests may be long).
const MOST_LINES: usize = 800;

#[test]
fn no_source_file_is_over_the_line_limit_before_its_tests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut over = Vec::new();
    let mut seen = 0;
    for dir in ["src", "paper/src", "plugins/sdk/src"] {
        for file in rust_files(&root.join(dir)) {
            let text = std::fs::read_to_string(&file).unwrap();
            let code = text.lines().take_while(|l| l.trim() != "#[cfg(test)]").count();
            seen += 1;
            if code > MOST_LINES {
                over.push(format!("{} ({code} lines)", file.strip_prefix(root).unwrap_or(&file).display()));
            }
        }
    }
    assert!(seen > 50, "only {seen} files found: the walk is wrong");
    assert!(over.is_empty(), "over {MOST_LINES} lines before the tests: {over:#?}");
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

#[test]
fn the_library_has_no_paper_code() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found = Vec::new();
    for path in library_files(&src).values() {
        let rel = path.strip_prefix(&src).unwrap_or(path).display().to_string();
        let text = std::fs::read_to_string(path).expect("read a source file");
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        for (i, line) in code.lines().enumerate() {
            let line = strip_comment_and_strings(line);
            // A crate path starts a path: `pki_types::pem::` is rustls's module, not the crate.
            let names = |w: &str| {
                line.match_indices(w)
                    .any(|(at, _)| !line[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':'))
            };
            if ["binance_syncd_paper", "rcgen::", "pem::", "mod paper", "mod demo"].iter().any(|w| names(w)) {
                found.push(format!("  src/{rel}:{}: {}", i + 1, line.trim()));
            }
        }
    }
    assert!(found.is_empty(), "paper code in the daemon's library:\n{}", found.join("\n"));
}

/// One rule for a poisoned lock (issue 20): `crate::lock`'s, not a copy of it per call site
/// (the paper crate has its own `lock.rs`).
#[test]
fn poisoned_locks_are_recovered_in_one_place() {
    for root in ROOTS {
        one_lock_rule_under(&Path::new(env!("CARGO_MANIFEST_DIR")).join(root));
    }
}

fn one_lock_rule_under(src: &Path) {
    let src = src.to_path_buf();
    let mut copies = Vec::new();
    for path in library_files(&src).values() {
        let rel = path.strip_prefix(&src).unwrap_or(path).display().to_string();
        if rel == "lock.rs" {
            continue;
        }
        let text = std::fs::read_to_string(path).expect("read a source file");
        for (i, line) in text.lines().enumerate() {
            let code = strip_comment_and_strings(line);
            if code.contains(".into_inner()") && (code.contains("unwrap_or_else(|") || code.contains("Err(")) {
                copies.push(format!("  src/{rel}:{}: {}", i + 1, line.trim()));
            }
            if code.contains("PoisonError::into_inner") {
                copies.push(format!("  src/{rel}:{}: {}", i + 1, line.trim()));
            }
        }
    }
    assert!(
        copies.is_empty(),
        "lock-poison recovery outside crate::lock (use LockAnyway and its siblings):\n{}",
        copies.join("\n")
    );
}

/// The checker itself finds what it must: a planted cycle through a sibling's `super::` path, a
/// `use crate::{..}` group and a folder module's own file, and no cycle in a plain layering.
#[test]
fn checker_finds_planted_cycles() {
    let m = |s: &str| -> ModPath { s.split("::").filter(|p| !p.is_empty()).map(str::to_string).collect() };
    let modules: BTreeSet<ModPath> = ["", "a", "b", "x", "x::one", "x::two"].into_iter().map(m).collect();
    let scan = |module: &str, text: &str| -> Vec<Edge> {
        named_paths(&m(module), text)
            .into_iter()
            .filter_map(|(line, target)| {
                let to = deepest_module(&modules, &target)?;
                Some(Edge { from: m(module), to, file: module.to_string(), line })
            })
            .collect()
    };
    // x::one → a (group) → x (folder file) → x::one: a cycle x → a → x at the root.
    let mut edges = scan("x::one", "use crate::{a::Thing, b};\n");
    edges.extend(scan("a", "fn f() { crate::x::Re::new() }\n"));
    let found = cycles(&modules, &edges);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("a → x") && found[0].contains("x → a"), "{}", found[0]);
    // Siblings inside a folder, one through `super::`, one through a nested group.
    let mut edges = scan("x::one", "use super::two::T;\n");
    edges.extend(scan("x::two", "use crate::{x::{one::{U}}};\n"));
    assert_eq!(cycles(&modules, &edges).len(), 1);
    // A folder and its children using each other, and a comment or a test module's `super::*`,
    // make no cycle.
    let mut edges = scan("x", "use one::T;\nuse crate::x::two::U;\n");
    edges.extend(scan("x::one", "use super::Y;\n// crate::a::Z in a comment\nmod tests {\n    use super::*;\n}\n"));
    edges.extend(scan("a", "use crate::b::B;\n"));
    assert!(cycles(&modules, &edges).is_empty());
}

/// Module path → file, for every library file under `src/`.
fn library_files(src: &Path) -> BTreeMap<ModPath, PathBuf> {
    // The binary's modules: `mod name;` lines of main.rs.
    let main = std::fs::read_to_string(src.join("main.rs")).unwrap_or_default();
    let mut binary: BTreeSet<String> =
        main.lines().filter_map(|l| l.trim().strip_prefix("mod ")?.strip_suffix(';').map(str::to_string)).collect();
    binary.insert("main".to_string());
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read a src folder") {
            let path = entry.expect("a folder entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).expect("under src");
            let mut module: ModPath = rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
            let last = module.pop().unwrap_or_default();
            let stem = last.trim_end_matches(".rs");
            if module.is_empty() && binary.contains(stem) {
                continue;
            }
            if !(stem == "mod" || (module.is_empty() && stem == "lib")) {
                module.push(stem.to_string());
            }
            out.insert(module, path);
        }
    }
    out
}

/// Every `crate::`/`super::` path written in code in `text` (a file of module `module`), as
/// (line, absolute path from the crate root).
fn named_paths(module: &[String], text: &str) -> Vec<(usize, ModPath)> {
    let lines: Vec<&str> = text.lines().collect();
    // The inline module each line is in (rustfmt closes `mod x {` at its own indentation).
    // A `#[cfg(test)]` module is left out (see the top of this file).
    let mut inline: Vec<ModPath> = Vec::with_capacity(lines.len());
    let mut in_test: Vec<bool> = Vec::with_capacity(lines.len());
    let mut open: Vec<(usize, String, bool)> = Vec::new();
    let mut previous = "";
    for line in &lines {
        let indent = line.len() - line.trim_start().len();
        if open.last().is_some_and(|o| o.0 == indent && line.trim() == "}") {
            open.pop();
        }
        inline.push(open.iter().map(|o| o.1.clone()).collect());
        let t = line.trim();
        let t = t.strip_prefix("pub ").or_else(|| t.strip_prefix("pub(crate) ")).unwrap_or(t);
        if let Some(name) = t.strip_prefix("mod ").and_then(|r| r.strip_suffix(" {")) {
            open.push((indent, name.to_string(), previous == "#[cfg(test)]"));
        }
        in_test.push(open.iter().any(|o| o.2));
        previous = line.trim();
    }
    // Code only: comments, string literals and test modules blanked, line numbers kept.
    let mut code = String::new();
    let mut line_of = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let clean = if in_test[i] { String::new() } else { strip_comment_and_strings(line) };
        line_of.extend(std::iter::repeat_n(i, clean.len() + 1));
        code.push_str(&clean);
        code.push('\n');
    }
    let bytes = code.as_bytes();
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        // Not a char boundary: inside a multi-byte character of a string that spans lines
        // (only single-line literals are blanked), which starts no path.
        let Some(rest) = code.get(at..) else {
            at += 1;
            continue;
        };
        let boundary =
            at == 0 || !(bytes[at - 1].is_ascii_alphanumeric() || matches!(bytes[at - 1], b'_' | b'$' | b':'));
        let base = if !boundary {
            None
        } else if rest.starts_with("crate::") {
            Some((Vec::new(), "crate::".len()))
        } else if rest.starts_with("super::") {
            let mut base: ModPath = module.iter().cloned().chain(inline[line_of[at]].iter().cloned()).collect();
            let mut len = 0;
            while code[at + len..].starts_with("super::") {
                base.pop();
                len += "super::".len();
            }
            Some((base, len))
        } else {
            None
        };
        match base {
            Some((base, len)) => {
                let mut pos = at + len;
                let mut paths = Vec::new();
                parse_tree(&code, &mut pos, base, &mut paths);
                out.extend(paths.into_iter().map(|p| (line_of[at] + 1, p)));
                at = pos.max(at + 1);
            }
            None => at += 1,
        }
    }
    out
}

/// Parses `a::b::{c, d::{e}}` at `pos`, pushing each full path (prefixed by `base`).
fn parse_tree(code: &str, pos: &mut usize, base: ModPath, out: &mut Vec<ModPath>) {
    let bytes = code.as_bytes();
    let skip_ws = |pos: &mut usize| {
        while *pos < bytes.len() && bytes[*pos].is_ascii_whitespace() {
            *pos += 1;
        }
    };
    let mut path = base;
    loop {
        skip_ws(pos);
        if *pos < bytes.len() && bytes[*pos] == b'{' {
            *pos += 1;
            loop {
                skip_ws(pos);
                if *pos >= bytes.len() || bytes[*pos] == b'}' {
                    *pos += 1;
                    return;
                }
                parse_tree(code, pos, path.clone(), out);
                skip_ws(pos);
                if *pos < bytes.len() && bytes[*pos] == b',' {
                    *pos += 1;
                }
            }
        }
        let start = *pos;
        while *pos < bytes.len() && (bytes[*pos].is_ascii_alphanumeric() || bytes[*pos] == b'_' || bytes[*pos] == b'*')
        {
            *pos += 1;
        }
        let segment = &code[start..*pos];
        if !segment.is_empty() && segment != "self" && segment != "*" {
            path.push(segment.to_string());
        }
        if code[*pos..].starts_with("::") && !segment.is_empty() {
            *pos += 2;
            continue;
        }
        out.push(path);
        return;
    }
}

/// The line with its `//` comment and the contents of its string and char literals blanked.
fn strip_comment_and_strings(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    // A quote as a char literal opens no string.
    let line = line.replace("'\"'", "' '");
    let mut chars = line.chars().peekable();
    let mut in_str = false;
    while let Some(c) = chars.next() {
        if in_str {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => {
                    in_str = false;
                    out.push('"');
                }
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_str = true;
                out.push('"');
            }
            '/' if chars.peek() == Some(&'/') => break,
            _ => out.push(c),
        }
    }
    out
}

/// The deepest module that `path` spells (the crate root if none), or None for the root itself.
fn deepest_module(modules: &BTreeSet<ModPath>, path: &[String]) -> Option<ModPath> {
    (1..=path.len()).rev().map(|n| path[..n].to_vec()).find(|p| modules.contains(p))
}

/// One message per cycle found: at each folder (the crate root first), its children are the
/// nodes, each standing for all its files.
fn cycles(modules: &BTreeSet<ModPath>, edges: &[Edge]) -> Vec<String> {
    let mut found = Vec::new();
    let folders: BTreeSet<ModPath> =
        modules.iter().filter(|m| !m.is_empty()).map(|m| m[..m.len() - 1].to_vec()).collect();
    for folder in folders {
        let depth = folder.len();
        let child = |m: &ModPath| (m.len() > depth && m[..depth] == folder[..]).then(|| m[depth].clone());
        // child → child → the first file line that makes the edge
        let mut graph: BTreeMap<String, BTreeMap<String, &Edge>> = BTreeMap::new();
        for e in edges {
            if let (Some(a), Some(b)) = (child(&e.from), child(&e.to)) {
                if a != b {
                    graph.entry(a).or_default().entry(b).or_insert(e);
                }
            }
        }
        for (cycle, others) in find_cycles(&graph) {
            let name = |c: &String| folder.iter().chain(std::iter::once(c)).cloned().collect::<Vec<_>>().join("::");
            let mut msg = format!("  {}:", cycle.iter().chain(cycle.first()).map(name).collect::<Vec<_>>().join(" → "));
            for pair in cycle.iter().zip(cycle.iter().cycle().skip(1)) {
                let e = graph[pair.0][pair.1];
                let to = if e.to.is_empty() { "crate".to_string() } else { e.to.join("::") };
                msg.push_str(&format!(
                    "\n      {} → {}: src/{}:{} names {}",
                    name(pair.0),
                    name(pair.1),
                    e.file,
                    e.line,
                    to
                ));
            }
            if !others.is_empty() {
                let others: Vec<String> = others.iter().map(name).collect();
                msg.push_str(&format!("\n      (the same knot also holds {})", others.join(", ")));
            }
            found.push(msg);
        }
    }
    found
}

/// One cycle per strongly connected component of more than one node (found by reachability,
/// enough at this size), as the shortest way back to its first node, and the component's other
/// nodes.
fn find_cycles(graph: &BTreeMap<String, BTreeMap<String, &Edge>>) -> Vec<(Vec<String>, Vec<String>)> {
    let nodes: Vec<&String> =
        graph.keys().chain(graph.values().flat_map(|m| m.keys())).collect::<BTreeSet<_>>().into_iter().collect();
    let mut comp: BTreeMap<&String, usize> = BTreeMap::new();
    let reach = |from: &String| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from];
        while let Some(n) = todo.pop() {
            for next in graph.get(n).into_iter().flat_map(|m| m.keys()) {
                if seen.insert(next) {
                    todo.push(next);
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&String, BTreeSet<&String>> = nodes.iter().map(|n| (*n, reach(n))).collect();
    let mut out = Vec::new();
    for n in &nodes {
        if comp.contains_key(n) || !reaches[n].contains(n) {
            continue;
        }
        let members: Vec<&String> =
            nodes.iter().copied().filter(|m| reaches[n].contains(m) && reaches[m].contains(n)).collect();
        let id = out.len();
        for m in &members {
            comp.insert(m, id);
        }
        // Shortest cycle through n: breadth-first from n back to n.
        let mut prev: BTreeMap<&String, &String> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([*n]);
        'search: while let Some(cur) = queue.pop_front() {
            for next in graph.get(cur).into_iter().flat_map(|m| m.keys()) {
                if next == *n {
                    prev.insert(next, cur);
                    break 'search;
                }
                if !prev.contains_key(next) {
                    prev.insert(next, cur);
                    queue.push_back(next);
                }
            }
        }
        let mut cycle = vec![(*n).clone()];
        let mut cur = prev[n];
        while cur != *n {
            cycle.push(cur.clone());
            cur = prev[cur];
        }
        cycle.reverse();
        cycle.rotate_right(1);
        let others: Vec<String> = members.iter().filter(|m| !cycle.contains(m)).map(|m| m.to_string()).collect();
        out.push((cycle, others));
    }
    out
}
