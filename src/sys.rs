//! The one system call the trust checks need that std does not offer.
//!
//! A leaf outside `plugin/` (the crate's other `unsafe` lives there) because the fill log's
//! trust check needs it too, and the plugin host reads the fill log: under `plugin/` it made
//! an import cycle (issue 20).

#![allow(unsafe_code)]

/// The effective user id: the user whose files (besides root's) the daemon trusts.
pub fn euid() -> u32 {
    // SAFETY: geteuid takes no arguments, touches no memory of ours and cannot fail.
    unsafe { libc::geteuid() }
}
