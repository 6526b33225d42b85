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

/// Removes each of `names` from the environment after overwriting its value in place.
///
/// Must be called before any other thread starts: `getenv` and `remove_var` are not safe
/// against a concurrent change of the environment.
pub fn scrub_env(names: &[&str]) {
    for name in names {
        let Ok(cname) = CString::new(*name) else { continue };
        // SAFETY: `getenv` returns NULL or a pointer to the NUL-terminated value inside the
        // environment block (for the initial environment, on the process's own stack; for one
        // set later, in memory libc allocated). We are the only thread, so nothing changes the
        // environment between this call and the write, and we overwrite exactly the `strlen`
        // bytes before the terminator, which stay valid memory of this process.
        unsafe {
            let value = libc::getenv(cname.as_ptr());
            if !value.is_null() {
                let len = libc::strlen(value);
                std::ptr::write_bytes(value, b'x', len);
            }
        }
        std::env::remove_var(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scrubbed_variable_is_gone_and_its_bytes_are_overwritten() {
        // A variable set at run time lives in libc's memory: it must be gone from every view.
        let name = "SYNCD_TEST_SCRUB_ME";
        std::env::set_var(name, "hunter2-secret");
        let cname = CString::new(name).unwrap();
        // SAFETY (test): reads the value pointer before scrubbing, as scrub_env does.
        let before = unsafe { libc::getenv(cname.as_ptr()) };
        assert!(!before.is_null());
        scrub_env(&[name]);
        assert!(std::env::var_os(name).is_none());
        // SAFETY (test): the environment is unchanged since; getenv reads it.
        assert!(unsafe { libc::getenv(cname.as_ptr()) }.is_null());
        // The initial environment (what /proc/PID/environ shows) is checked on a real daemon
        // in tests/it/hardening.rs: a test process cannot put a variable there.
    }
}
