//! Keeping the daemon's secrets out of reach of its plugins and of other processes of its user.
//!
//! Plugin code runs as the daemon's user. Two things would hand it the API secret anyway:
//!
//! - **`/proc/<daemon>/environ` and `/proc/<daemon>/mem`**: readable by any process of the same
//!   user while the daemon is "dumpable". [`forbid_dumping`] clears that flag (`PR_SET_DUMPABLE`
//!   0), which also means no core file that could carry the key.
//! - **The environment itself**: a child inherits it, and `getenv` in a plugin reads it.
//!   [`scrub_env`] overwrites each secret's bytes where they lie and removes the variable, so
//!   neither a child nor the kernel's view of the initial environment (which reads those very
//!   bytes) shows it.
//!
//! Both run in `main`, before any thread starts (the environment is not thread-safe).
#![allow(unsafe_code)]

use std::ffi::CString;

/// The variables that are secrets (or hold one) and leave the environment once read.
pub const SECRET_VARS: [&str; 3] = ["BINANCE_API_SECRET", "BINANCE_API_KEY", "SYNCD_ALERT_WEBHOOK"];

/// Marks this process not dumpable: no core dumps, and `/proc/self/{mem,environ}` closed to
/// other processes of the same user (a plugin, or a child of one).
pub fn forbid_dumping() -> std::io::Result<()> {
    // SAFETY: PR_SET_DUMPABLE takes one integer argument and touches no memory of ours; the
    // trailing arguments are ignored by the kernel for this option and passed as 0.
    let rc =
        unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Whether this process is dumpable (`PR_GET_DUMPABLE`), for `check` and tests.
pub fn dumpable() -> bool {
    // SAFETY: PR_GET_DUMPABLE reads a flag of this process and returns it; no pointers.
    let rc =
        unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong, 0) };
    rc == 1
}

/// Removes each of `names` from the environment after overwriting its value in place (every
/// copy: a name may stand in the initial environment more than once).
///
/// The environment is not safe against concurrent change, so this refuses unless the calling
/// thread is the process's only one (`Threads:` in `/proc/self/status`): then nothing can read
/// or change the environment while it works, and nothing can start a thread meanwhile.
pub fn scrub_env(names: &[&str]) -> std::io::Result<()> {
    if threads() != Some(1) {
        return Err(std::io::Error::other("other threads are running; the environment cannot be changed safely"));
    }
    for name in names {
        let Ok(cname) = CString::new(*name) else { continue };
        // Bounded: each pass overwrites one copy and `remove_var` drops them all.
        for _ in 0..64 {
            // SAFETY: `getenv` returns NULL or a pointer to the NUL-terminated value inside the
            // environment block (for the initial environment, on the process's own stack; for
            // one set later, in memory libc allocated). This is the only thread (checked
            // above), so nothing changes the environment between this call and the write, and
            // we overwrite exactly the `strlen` bytes before the terminator, which stay valid
            // memory of this process. The value becomes `xxx...`, so the next pass finds a
            // later copy of the name, if any, or the same one again (then we stop).
            let overwritten = unsafe {
                let value = libc::getenv(cname.as_ptr());
                if value.is_null() {
                    break;
                }
                let len = libc::strlen(value);
                let bytes = std::slice::from_raw_parts(value as *const u8, len);
                if bytes.iter().all(|&b| b == b'x') {
                    false
                } else {
                    std::ptr::write_bytes(value, b'x', len);
                    true
                }
            };
            if !overwritten {
                break;
            }
        }
        std::env::remove_var(name);
    }
    Ok(())
}

/// The number of threads of this process, from `/proc/self/status`.
fn threads() -> Option<u32> {
    crate::sys::status_field("self", "Threads:")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_refuses_while_other_threads_run() {
        // The test harness runs tests on threads of its own: the guard must say no, and leave
        // the variable alone. The scrub itself is checked on a real daemon in
        // tests/it/hardening.rs (a plugin, a child and /proc/PID/environ find no secret).
        let name = "SYNCD_TEST_SCRUB_ME";
        let _other = std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_millis(200)));
        std::env::set_var(name, "kept");
        assert!(scrub_env(&[name]).is_err());
        assert_eq!(std::env::var(name).as_deref(), Ok("kept"));
        std::env::remove_var(name);
    }
}
