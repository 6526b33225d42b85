//! The one system call the trust checks need that std does not offer.

#![allow(unsafe_code)]

/// The effective user id: the user whose files (besides root's) the daemon trusts.
pub fn euid() -> u32 {
    // SAFETY: geteuid takes no arguments, touches no memory of ours and cannot fail.
    unsafe { libc::geteuid() }
}
