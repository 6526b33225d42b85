//! What the process learns about itself and other processes without `unsafe`: the effective
//! user id (the trust checks compare owners with it), fields of `/proc/<pid>/status`, and an
//! unpredictable number.
//!
//! A leaf (the fill log's trust check needs it, and the plugin host reads the fill log: under
//! `plugin/` it made an import cycle), read from `/proc/self/status` so that no `unsafe` lives
//! outside `plugin/`. `/proc/self/status` stays readable by the process itself after
//! `PR_SET_DUMPABLE` 0, unlike the owner of `/proc/self`, which then becomes root.

/// The effective user id: the user whose files (besides root's) the daemon trusts. Read once.
/// Where `/proc` cannot be read, `u32::MAX` (no user's): then only root's files are trusted.
pub fn euid() -> u32 {
    static EUID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *EUID.get_or_init(|| {
        std::fs::read_to_string("/proc/self/status").ok().as_deref().and_then(parse_euid).unwrap_or(u32::MAX)
    })
}

/// The value of field `key` (e.g. `"Threads:"`, `"VmRSS:"`, `"CapEff:"`) in `/proc/<pid>/status`
/// (`pid` may be `"self"`), trimmed; `None` where the process or the field is not there.
/// World-readable, also for a process that is not dumpable.
pub fn status_field(pid: &str, key: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix(key)).map(|v| v.trim().to_string())
}

/// A number no other process can guess (std's per-process random hash keys over the time and
/// the pid): names of probe files, a daemon's instance id.
pub fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.write_u32(std::process::id());
    h.finish()
}

/// The second field of the `Uid:` line (real, effective, saved, filesystem).
fn parse_euid(status: &str) -> Option<u32> {
    status.lines().find_map(|l| l.strip_prefix("Uid:"))?.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_field_is_read_trimmed_and_a_missing_one_is_none() {
        assert!(status_field("self", "Threads:").and_then(|t| t.parse::<u32>().ok()).is_some_and(|n| n >= 1));
        assert_eq!(status_field("self", "NoSuchField:"), None);
        assert_eq!(status_field("0", "Threads:"), None);
        assert_ne!(random_u64(), random_u64());
    }

    #[test]
    fn the_effective_uid_is_the_second_field_and_matches_the_owner_of_a_new_file() {
        assert_eq!(parse_euid("Name:\tx\nUid:\t1000\t1001\t1002\t1003\nGid:\t5\n"), Some(1001));
        assert_eq!(parse_euid("Name:\tx\n"), None);
        use std::os::unix::fs::MetadataExt;
        let path = std::env::temp_dir().join(format!("syncd-euid-{}", std::process::id()));
        std::fs::write(&path, b"").unwrap();
        assert_eq!(euid(), std::fs::metadata(&path).unwrap().uid());
        let _ = std::fs::remove_file(&path);
    }
}
