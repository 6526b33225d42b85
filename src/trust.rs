//! Whether a file or folder may be believed, by its kind, owner and mode, as sshd's
//! `StrictModes` decides it: the one verdict for plugin files and folders (`plugin::trust`,
//! which adds the folder chain and the checked opens) and for the files of the fill log
//! (`filllog`, which allows the log directory's owner as well). A leaf: facts in, a reason out.

use std::fmt;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

/// What a path is, as `lstat` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Regular,
    Directory,
    Symlink,
    Fifo,
    CharDevice,
    BlockDevice,
    Socket,
}

impl Kind {
    pub fn of(t: fs::FileType) -> Kind {
        if t.is_symlink() {
            Kind::Symlink
        } else if t.is_dir() {
            Kind::Directory
        } else if t.is_fifo() {
            Kind::Fifo
        } else if t.is_char_device() {
            Kind::CharDevice
        } else if t.is_block_device() {
            Kind::BlockDevice
        } else if t.is_socket() {
            Kind::Socket
        } else {
            Kind::Regular
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Regular => "a regular file",
            Kind::Directory => "a directory",
            Kind::Symlink => "a symbolic link",
            Kind::Fifo => "a FIFO",
            Kind::CharDevice => "a character device",
            Kind::BlockDevice => "a block device",
            Kind::Socket => "a socket",
        })
    }
}

/// What the decision looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    pub kind: Kind,
    /// Permission bits with sticky/setuid/setgid (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
}

impl Facts {
    pub fn of(m: &fs::Metadata) -> Facts {
        Facts { kind: Kind::of(m.file_type()), mode: m.mode() & 0o7777, uid: m.uid() }
    }
}

/// Why a path is not trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Distrust {
    NotRegular(Kind),
    NotDirectory(Kind),
    /// `also`: the one more owner the caller allowed (see [`judge_file_owned`]).
    Owner {
        uid: u32,
        euid: u32,
        also: Option<u32>,
    },
    Writable {
        mode: u32,
    },
}

impl fmt::Display for Distrust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Distrust::NotRegular(k) => write!(f, "is {k}, not a regular file"),
            Distrust::NotDirectory(k) => write!(f, "is {k}, not a directory"),
            Distrust::Owner { uid, euid, also: Some(also) } => write!(
                f,
                "is owned by uid {uid}, not by root, the daemon's user (uid {euid}) or the directory's owner (uid {also})"
            ),
            Distrust::Owner { uid, euid, also: None } if *euid == 0 => write!(f, "is owned by uid {uid}, not by root"),
            Distrust::Owner { uid, euid, also: None } => {
                write!(f, "is owned by uid {uid}, neither root nor the daemon's user (uid {euid})")
            }
            Distrust::Writable { mode } => write!(f, "is writable by group or others (mode {mode:04o})"),
        }
    }
}

const GROUP_OTHER_WRITE: u32 = 0o022;
const STICKY: u32 = 0o1000;

fn owner_ok(f: Facts, euid: u32, also: Option<u32>) -> Result<(), Distrust> {
    if f.uid == 0 || f.uid == euid || Some(f.uid) == also {
        Ok(())
    } else {
        Err(Distrust::Owner { uid: f.uid, euid, also })
    }
}

/// A plugin image or settings file: a regular file, owned by root or the daemon's user
/// (`euid`), writable by neither its group nor others. The owner is judged before the mode:
/// the first thing to fix is said first.
pub fn judge_file(f: Facts, euid: u32) -> Result<(), Distrust> {
    judge_file_owned(f, euid, None)
}

/// [`judge_file`] with one more owner allowed (`also`): a fill log's directory owner, who can
/// replace any file in it anyway.
pub fn judge_file_owned(f: Facts, euid: u32, also: Option<u32>) -> Result<(), Distrust> {
    if f.kind != Kind::Regular {
        return Err(Distrust::NotRegular(f.kind));
    }
    owner_ok(f, euid, also)?;
    if f.mode & GROUP_OTHER_WRITE != 0 {
        return Err(Distrust::Writable { mode: f.mode });
    }
    Ok(())
}

/// The plugin folder (`above` false) or a folder above it (`above` true: sticky may be
/// world-writable).
pub fn judge_dir(f: Facts, euid: u32, above: bool) -> Result<(), Distrust> {
    if f.kind != Kind::Directory {
        return Err(Distrust::NotDirectory(f.kind));
    }
    owner_ok(f, euid, None)?;
    if f.mode & GROUP_OTHER_WRITE != 0 && !(above && f.mode & STICKY != 0) {
        return Err(Distrust::Writable { mode: f.mode });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: u32 = 1000;

    fn file(kind: Kind, mode: u32, uid: u32) -> Result<(), Distrust> {
        judge_file(Facts { kind, mode, uid }, ME)
    }

    fn dir(mode: u32, uid: u32) -> Result<(), Distrust> {
        judge_dir(Facts { kind: Kind::Directory, mode, uid }, ME, true)
    }

    #[test]
    fn files_owned_by_root_or_the_daemon_and_writable_by_them_alone_pass() {
        for mode in [0o644, 0o755, 0o600, 0o400, 0o700, 0o4755] {
            assert_eq!(file(Kind::Regular, mode, 0), Ok(()), "{mode:o}");
            assert_eq!(file(Kind::Regular, mode, ME), Ok(()), "{mode:o}");
        }
    }

    #[test]
    fn group_or_other_write_or_another_owner_refuses_a_file() {
        for mode in [0o666, 0o664, 0o646, 0o620, 0o602, 0o777, 0o1666] {
            assert_eq!(file(Kind::Regular, mode, 0), Err(Distrust::Writable { mode }), "{mode:o}");
        }
        assert_eq!(file(Kind::Regular, 0o644, 65534), Err(Distrust::Owner { uid: 65534, euid: ME, also: None }));
        // The owner is judged before the mode: the first thing to fix is said first.
        assert_eq!(file(Kind::Regular, 0o666, 65534), Err(Distrust::Owner { uid: 65534, euid: ME, also: None }));
    }

    #[test]
    fn anything_but_a_regular_file_is_refused_whatever_its_mode() {
        for kind in [Kind::Symlink, Kind::Fifo, Kind::CharDevice, Kind::BlockDevice, Kind::Socket, Kind::Directory] {
            assert_eq!(file(kind, 0o644, 0), Err(Distrust::NotRegular(kind)), "{kind}");
        }
    }

    #[test]
    fn folders_may_be_world_writable_only_when_sticky() {
        assert_eq!(dir(0o755, 0), Ok(()));
        assert_eq!(dir(0o700, ME), Ok(()));
        assert_eq!(dir(0o1777, 0), Ok(()), "/tmp");
        assert_eq!(dir(0o777, 0), Err(Distrust::Writable { mode: 0o777 }));
        assert_eq!(dir(0o775, ME), Err(Distrust::Writable { mode: 0o775 }));
        assert_eq!(
            dir(0o1777, 65534),
            Err(Distrust::Owner { uid: 65534, euid: ME, also: None }),
            "sticky, but not ours"
        );
        assert_eq!(
            judge_dir(Facts { kind: Kind::Regular, mode: 0o755, uid: 0 }, ME, true),
            Err(Distrust::NotDirectory(Kind::Regular))
        );
    }

    #[test]
    fn the_plugin_folder_itself_is_never_trusted_world_writable_even_sticky() {
        let plugin_folder = |mode| judge_dir(Facts { kind: Kind::Directory, mode, uid: 0 }, ME, false);
        assert_eq!(plugin_folder(0o1777), Err(Distrust::Writable { mode: 0o1777 }));
        assert_eq!(plugin_folder(0o1755), Ok(()));
        assert_eq!(plugin_folder(0o755), Ok(()));
    }

    #[test]
    fn as_root_only_root_owned_files_pass() {
        let f = |uid| judge_file(Facts { kind: Kind::Regular, mode: 0o644, uid }, 0);
        assert_eq!(f(0), Ok(()));
        assert_eq!(f(ME), Err(Distrust::Owner { uid: ME, euid: 0, also: None }));
        assert_eq!(Distrust::Owner { uid: ME, euid: 0, also: None }.to_string(), "is owned by uid 1000, not by root");
    }

    #[test]
    fn reasons_name_the_mode_in_octal() {
        assert_eq!(Distrust::Writable { mode: 0o666 }.to_string(), "is writable by group or others (mode 0666)");
        assert_eq!(Distrust::NotRegular(Kind::Fifo).to_string(), "is a FIFO, not a regular file");
    }

    #[test]
    fn the_fill_log_also_believes_its_directory_owner_and_says_so_when_refusing() {
        let log = |uid, mode| judge_file_owned(Facts { kind: Kind::Regular, mode, uid }, ME, Some(2000));
        assert_eq!(log(2000, 0o640), Ok(()));
        assert_eq!(log(2000, 0o664), Err(Distrust::Writable { mode: 0o664 }));
        let refused = log(65534, 0o640);
        assert_eq!(refused, Err(Distrust::Owner { uid: 65534, euid: ME, also: Some(2000) }));
        assert_eq!(
            refused.map_err(|e| e.to_string()),
            Err("is owned by uid 65534, not by root, the daemon's user (uid 1000) or the directory's owner (uid 2000)"
                .into())
        );
        // A plugin file gets no such allowance.
        assert!(judge_file(Facts { kind: Kind::Regular, mode: 0o644, uid: 2000 }, ME).is_err());
    }
}
