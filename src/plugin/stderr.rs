//! A program plugin's stderr (issue 23): its lines in the daemon's log under its name, cut and
//! rate-limited, read on a thread of their own until the pipe closes.

use super::proto;
use std::io::{self, Read};
use std::process::ChildStderr;
use std::time::{Duration, Instant};

/// Longest stderr line logged; the rest of a longer line is dropped.
pub const MAX_LINE: usize = 1024;
/// Stderr lines logged per second; past that they are counted, and the count logged.
pub const LINES_PER_SECOND: u32 = 20;

/// Logs `pipe`'s lines as `plugin NAME: LINE` on a thread of its own until the pipe closes
/// (the process and all it started are gone): at most [`LINES_PER_SECOND`], each cut at
/// [`MAX_LINE`] bytes, so a plugin that floods its stderr costs the log a line a second.
pub(super) fn relay(name: &str, pipe: ChildStderr) {
    let name = name.to_string();
    let who = name.clone();
    let spawned = std::thread::Builder::new().name(format!("stderr:{name}")).spawn(move || {
        let mut limit = RateLimit::new(LINES_PER_SECOND);
        let say = |line: &str| log::warn!("plugin {name}: {line}");
        read_lines(pipe, MAX_LINE, |line| {
            let now = Instant::now();
            if let Some(n) = limit.window_over(now) {
                log::warn!("plugin {name}: {n} more lines of its stderr were not logged (over {LINES_PER_SECOND}/s)");
            }
            if limit.take(now) {
                say(line);
            }
        });
        if let Some(n) = limit.window_over(Instant::now() + Duration::from_secs(1)) {
            log::warn!("plugin {name}: {n} more lines of its stderr were not logged (over {LINES_PER_SECOND}/s)");
        }
    });
    if let Err(e) = spawned {
        log::warn!("plugin {who}: its stderr is not logged (no thread for it: {e})");
    }
}

/// At most `per_second` lines in each one-second window; the lines refused are counted.
struct RateLimit {
    per_second: u32,
    window: Option<Instant>,
    taken: u32,
    refused: u64,
}

impl RateLimit {
    fn new(per_second: u32) -> RateLimit {
        RateLimit { per_second, window: None, taken: 0, refused: 0 }
    }

    /// When the window is over at `now`: the lines it refused (if any), and a new window.
    fn window_over(&mut self, now: Instant) -> Option<u64> {
        let over = self.window.is_none_or(|w| now.duration_since(w) >= Duration::from_secs(1));
        if !over {
            return None;
        }
        self.window = Some(now);
        self.taken = 0;
        let refused = std::mem::take(&mut self.refused);
        (refused > 0).then_some(refused)
    }

    fn take(&mut self, _now: Instant) -> bool {
        if self.taken < self.per_second {
            self.taken += 1;
            true
        } else {
            self.refused += 1;
            false
        }
    }
}

/// Calls `each` with every line of `r` (without its newline, invalid UTF-8 replaced), each cut
/// at `max` bytes: memory stays bounded whatever the writer sends. A last line without a
/// newline counts too.
fn read_lines(mut r: impl Read, max: usize, mut each: impl FnMut(&str)) {
    let mut line: Vec<u8> = Vec::with_capacity(max);
    let mut cut = false;
    let mut buf = [0u8; 4096];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        for &b in &buf[..n] {
            if b == b'\n' {
                each(proto::cut(&String::from_utf8_lossy(&line), max));
                line.clear();
                cut = false;
            } else if line.len() < max {
                line.push(b);
            } else if !cut {
                cut = true;
            }
        }
    }
    if !line.is_empty() {
        each(proto::cut(&String::from_utf8_lossy(&line), max));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_lines_are_cut_and_a_flood_is_counted() {
        let mut got = Vec::new();
        let long = "x".repeat(3000);
        let text = format!("one\n{long}\nthree");
        read_lines(text.as_bytes(), 1024, |l| got.push(l.to_string()));
        assert_eq!(got.len(), 3);
        assert_eq!((got[0].as_str(), got[1].len(), got[2].as_str()), ("one", 1024, "three"));
        let mut limit = RateLimit::new(20);
        let t0 = Instant::now();
        assert_eq!(limit.window_over(t0), None);
        let taken = (0..50).filter(|_| limit.take(t0)).count();
        assert_eq!(taken, 20);
        assert_eq!(limit.window_over(t0 + Duration::from_millis(500)), None, "the same window");
        assert_eq!(limit.window_over(t0 + Duration::from_secs(1)), Some(30));
        assert!(limit.take(t0 + Duration::from_secs(1)), "a new window");
    }
}
