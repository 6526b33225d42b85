//! Executable plugins (issue 23): any program in `SYNCD_PLUGIN_DIR` that speaks the plugin
//! protocol (`docs/plugin-protocol.md`) is a strategy, run as a child of the daemon with the
//! same supervision as a `.so` in its plugin host.
//!
//! Which files are plugins, and under which name ([`plugin_name`]): `NAME.so` is a shared
//! library; any other entry that is not a directory, has an execute bit, is not hidden and is
//! not a settings, temporary or backup file is a program, named after its file less its last
//! extension (`grid.py` → `grid`, `mystrat` → `mystrat`). Two files that give one name are
//! both refused ([`plugin_files`]).
//!
//! How a program runs (`spawn`): the daemon starts its own `plugin-host` role with
//! `--exec COPY`; that child confines itself exactly as for a `.so` (`hostrole`: no new
//! privileges, death with the daemon, no core, capabilities dropped, the memory and descriptor
//! limits, every descriptor above 2 closed) and then `execve`s the private, executable copy of
//! the checked file (a script through its `#!` line), keeping its process id, so its process
//! group and everything the daemon knows of it stay the same. Descriptors 0 and 1 are one end of
//! a socket pair, the protocol's channel; 2 is a pipe whose lines the daemon logs under the
//! plugin's name (`stderr`). The first frame is `hello` rather than `load`.

use super::ffi::HostServices;
use super::proto::{self, Down};
use super::remote::{Limits, Remote};
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::Path;
use std::time::Duration;

/// What a plugin file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// `NAME.so`, loaded by the plugin host (or in the daemon with `isolation = none`).
    Library,
    /// Any other executable file: run, and spoken to over its stdin and stdout.
    Program,
}

/// Extensions of files that are never plugins, executable or not: settings, and what editors,
/// package managers and installers leave behind.
const NOT_PLUGINS: &[&str] = &["conf", "tmp", "swp", "swo", "bak", "old", "orig", "rej", "part", "new", "disabled"];

/// The plugin a directory entry is, from its name and its `lstat` mode: `None` when it is
/// none. A symlink counts by its name (it is refused, with its reason, when opened), so that
/// what looks like a plugin is never silently ignored.
pub fn plugin_name(file: &str, mode: u32) -> Option<(String, Kind)> {
    let kind = mode & libc::S_IFMT;
    if file.starts_with('.') || file.ends_with('~') || kind == libc::S_IFDIR {
        return None;
    }
    let (stem, ext) = match file.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => (stem, Some(ext)),
        _ => (file, None),
    };
    if ext == Some("so") {
        return Some((stem.to_string(), Kind::Library));
    }
    if ext.is_some_and(|e| NOT_PLUGINS.contains(&e) || e.starts_with("dpkg-")) {
        return None;
    }
    let executable = mode & 0o111 != 0 || kind == libc::S_IFLNK;
    executable.then(|| (stem.to_string(), Kind::Program))
}

/// The plugins of `dir` by name: each name's file names (more than one is a clash, refused),
/// in name order.
pub fn plugin_files(dir: &Path) -> io::Result<BTreeMap<String, Vec<(String, Kind)>>> {
    use std::os::unix::fs::MetadataExt;
    let mut out: BTreeMap<String, Vec<(String, Kind)>> = BTreeMap::new();
    for e in fs::read_dir(dir)?.flatten() {
        let Some(file) = e.file_name().to_str().map(String::from) else { continue };
        let Ok(m) = fs::symlink_metadata(e.path()) else { continue };
        if let Some((name, kind)) = plugin_name(&file, m.mode()) {
            out.entry(name).or_default().push((file, kind));
        }
    }
    for files in out.values_mut() {
        files.sort();
    }
    Ok(out)
}

/// Why `name` is refused when several files give it.
pub fn clash(name: &str, files: &[(String, Kind)]) -> Option<String> {
    (files.len() > 1).then(|| {
        let list: Vec<&str> = files.iter().map(|(f, _)| f.as_str()).collect();
        format!("{} files give the plugin name {name} ({}): remove all but one", files.len(), list.join(", "))
    })
}

/// The single file that is plugin `name` in `dir`, if exactly one is.
pub fn file_of(dir: &Path, name: &str) -> Option<String> {
    match plugin_files(dir).ok()?.remove(name)?.as_slice() {
        [(file, _)] => Some(file.clone()),
        _ => None,
    }
}

/// Starts program plugin `name` from its private copy `image` (executable, made from the
/// checked descriptor) with `workdir` as its working and home directory, and has it answer
/// `hello` (told its folder, `plugin_dir`, in `SYNCD_PLUGIN_DIR`: where its own modules are,
/// since it runs from a copy): `Err` with the reason when it refuses, answers anything but `ready` of this
/// protocol, or nothing within the load wait.
pub(super) fn spawn(
    image: &Path,
    workdir: &Path,
    plugin_dir: &Path,
    name: &str,
    services: Box<dyn HostServices>,
    stall: Duration,
    limits: Limits,
) -> Result<Remote, String> {
    let image = fs::canonicalize(image).map_err(|e| format!("{}: {e}", image.display()))?;
    let hello = Down::Hello { proto: proto::PROTO, name: name.to_string() };
    let extra = [
        "--exec".to_string(),
        image.to_string_lossy().into_owned(),
        "--dir".to_string(),
        plugin_dir.to_string_lossy().into_owned(),
    ];
    Remote::start(super::remote::host_program()?, workdir, &extra, &hello, services, stall, limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_file_and_only_executables_settings_aside_are_programs() {
        let exe = libc::S_IFREG | 0o755;
        let plain = libc::S_IFREG | 0o644;
        assert_eq!(plugin_name("grid.py", exe), Some(("grid".into(), Kind::Program)));
        assert_eq!(plugin_name("mystrat", exe), Some(("mystrat".into(), Kind::Program)));
        assert_eq!(plugin_name("grid.so", plain), Some(("grid".into(), Kind::Library)));
        assert_eq!(plugin_name("grid.so", exe), Some(("grid".into(), Kind::Library)));
        assert_eq!(plugin_name("a.b.py", exe), Some(("a.b".into(), Kind::Program)));
        // Not executable, hidden, settings, temporary, backups, directories: no plugin.
        for (file, mode) in [
            ("grid.py", plain),
            (".grid.py", exe),
            (".grid.so.tmp", plain),
            ("grid.conf", exe),
            ("grid.py.tmp", exe),
            ("grid.py~", exe),
            ("grid.py.bak", exe),
            ("grid.py.dpkg-new", exe),
            ("lib", libc::S_IFDIR | 0o755),
        ] {
            assert_eq!(plugin_name(file, mode), None, "{file}");
        }
        // A symlink is a plugin by its name: refused with its reason once opened.
        assert_eq!(plugin_name("linked", libc::S_IFLNK | 0o777), Some(("linked".into(), Kind::Program)));
    }

    #[test]
    fn two_files_of_one_name_are_a_clash_named_in_words() {
        let files = vec![("grid.py".to_string(), Kind::Program), ("grid.so".to_string(), Kind::Library)];
        let why = clash("grid", &files).unwrap();
        assert_eq!(why, "2 files give the plugin name grid (grid.py, grid.so): remove all but one");
        assert_eq!(clash("grid", &files[..1]), None);
    }
}
