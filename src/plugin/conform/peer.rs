//! One process of the plugin under test, started exactly as the daemon starts a plugin (its
//! plugin-host role, confined, with a socket pair on its stdin and stdout), and the raw frames
//! on its channel. Frames are read here as bytes, not through the daemon's typed reader, so
//! that a broken one can be described (its first bytes, what it announced) rather than only
//! refused.

use super::super::proto;
use super::super::remote::{describe, end_within, host_child, host_program, Limits};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

/// The plugin under test.
pub(super) struct Target {
    /// Its file, resolved.
    pub file: PathBuf,
    /// The private copy that is run (`run` runs one from its state directory).
    pub image: PathBuf,
    /// The folder it is in: `SYNCD_PLUGIN_DIR` for a program (where its own modules are).
    pub dir: PathBuf,
    pub name: String,
    /// A program (run with `hello`), else a `.so` (loaded by the host with `load`).
    pub program: bool,
    /// Its `NAME.conf` text, sent in `start`.
    pub settings: String,
    /// How long a call may take (`SYNCD_PLUGIN_STALL_S`'s default unless told).
    pub stall: Duration,
    /// Its process's limits and its tag, from `NAME.conf` as `run` reads them.
    pub limits: Limits,
    pub tag: String,
    /// Its working directory (`plugins/run/NAME` in the daemon's state directory).
    pub workdir: PathBuf,
}

/// What the next read found.
#[derive(Debug)]
pub(super) enum Got {
    /// A frame's JSON text, not yet parsed.
    Frame(Vec<u8>),
    /// The plugin closed the channel (or exited) between frames.
    End,
    /// Nothing whole came before the deadline.
    Late,
}

pub(super) struct Peer {
    child: Child,
    chan: UnixStream,
    /// Read and not yet taken as a frame.
    buf: Vec<u8>,
    /// Set once it has been waited for.
    exit: Option<String>,
}

impl Peer {
    /// Starts a process of the plugin. Its stderr (a program's) is printed on ours, each line
    /// under its name, as the daemon would log it.
    pub fn start(t: &Target) -> Result<Peer, String> {
        let extra: Vec<String> = if t.program {
            vec![
                "--exec".into(),
                t.image.to_string_lossy().into_owned(),
                "--dir".into(),
                t.dir.to_string_lossy().into_owned(),
            ]
        } else {
            Vec::new()
        };
        let (mut child, chan) = host_child(host_program()?, &t.workdir, &extra, t.limits, t.program)?;
        if let Some(stderr) = child.stderr.take() {
            let name = t.name.clone();
            let relay = move || {
                for line in BufReader::new(stderr).split(b'\n').map_while(Result::ok) {
                    eprintln!("  plugin {name} (stderr): {}", String::from_utf8_lossy(&line));
                }
            };
            if let Err(e) = std::thread::Builder::new().name("conformance-stderr".into()).spawn(relay) {
                eprintln!("binance-syncd conformance: its stderr is not shown: {e}");
            }
        }
        Ok(Peer { child, chan, buf: Vec::new(), exit: None })
    }

    /// Its first frame, as the daemon sends it: `hello` to a program, `load` to the host of a
    /// `.so`, for protocol version `proto`.
    pub fn first_frame(t: &Target, proto: u32) -> serde_json::Value {
        if t.program {
            serde_json::json!({"t": "hello", "proto": proto, "name": t.name})
        } else {
            serde_json::json!({"t": "load", "proto": proto, "image": t.image.to_string_lossy()})
        }
    }

    /// Writes one frame, all of it within `wait` (one deadline, however slowly the plugin
    /// reads): a plugin that does not take it in that time is not reading.
    pub fn send(&mut self, msg: &serde_json::Value, wait: Duration) -> Result<(), String> {
        let body = serde_json::to_vec(msg).map_err(|e| e.to_string())?;
        let mut frame = Vec::with_capacity(4 + body.len());
        frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
        frame.extend_from_slice(&body);
        let late = format!(
            "it did not read a frame of {} bytes within {} ms: it stopped reading",
            frame.len(),
            wait.as_millis()
        );
        let deadline = Instant::now().checked_add(wait);
        let mut rest = &frame[..];
        while !rest.is_empty() {
            let left = deadline.map_or(wait, |d| d.saturating_duration_since(Instant::now()));
            if left.is_zero() {
                return Err(late);
            }
            let _ = self.chan.set_write_timeout(Some(left));
            match self.chan.write(rest) {
                Ok(0) => return Err(format!("its channel took no more bytes{}", self.ended())),
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return Err(late),
                Err(e) => return Err(format!("its channel failed when written to ({e}){}", self.ended())),
            }
        }
        Ok(())
    }

    /// Reads until `want` bytes are buffered: false if the channel ended or the deadline came
    /// first (`Err` only for a failed read).
    fn fill(&mut self, want: usize, deadline: Instant) -> Result<Option<bool>, String> {
        let mut chunk = [0u8; 64 << 10];
        while self.buf.len() < want {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let _ = self.chan.set_read_timeout(Some(left));
            match self.chan.read(&mut chunk) {
                Ok(0) => return Ok(Some(false)),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return Ok(None),
                Err(e) => return Err(format!("its channel failed when read ({e})")),
            }
        }
        Ok(Some(true))
    }

    /// The next frame, parsed as JSON (not yet as a message). `Err` for a frame the daemon
    /// would take for a broken protocol, saying what came.
    pub fn recv(&mut self, deadline: Instant) -> Result<Got, String> {
        match self.fill(4, deadline)? {
            None => return Ok(Got::Late),
            Some(false) if self.buf.is_empty() => return Ok(Got::End),
            Some(false) => return Err(format!("its channel ended inside a frame's length{}", self.ended())),
            Some(true) => {}
        }
        let head = [self.buf[0], self.buf[1], self.buf[2], self.buf[3]];
        let len = u32::from_be_bytes(head) as usize;
        if len > proto::MAX_UP {
            return Err(format!(
                "it announced a frame of {len} bytes, over the {} a plugin may send{}",
                proto::MAX_UP,
                text_hint(&self.buf)
            ));
        }
        match self.fill(4 + len, deadline)? {
            None => return Ok(Got::Late),
            Some(false) => {
                let got = self.buf.len() - 4;
                return Err(format!("its channel ended inside a frame ({got} of {len} bytes){}", self.ended()));
            }
            Some(true) => {}
        }
        let body: Vec<u8> = self.buf.drain(..4 + len).skip(4).collect();
        match serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
            Ok(_) => Ok(Got::Frame(body)),
            Err(e) => {
                let start = String::from_utf8_lossy(&body[..body.len().min(60)]).into_owned();
                Err(format!("it sent a frame of {len} bytes that is not UTF-8 JSON ({e}): {start:?}"))
            }
        }
    }

    /// How many bytes not yet taken as frames there are, waiting up to `wait` for one (they
    /// stay for the next [`Peer::recv`]): called after a `done`, where a plugin must send
    /// nothing, and bytes it sent right after may have come in the same read as the `done`.
    pub fn unread_within(&mut self, wait: Duration) -> Result<usize, String> {
        let _ = self.fill(1, Instant::now() + wait)?;
        Ok(self.buf.len())
    }

    /// Closes the daemon's end, as the daemon does when it is done with a version: the plugin
    /// reads the end of its stdin.
    pub fn close(&mut self) {
        let _ = self.chan.shutdown(Shutdown::Both);
    }

    /// How it ended, if it did within `wait`; either way its process group is killed then
    /// (what it started ends with it) and it is reaped, as the daemon ends a plugin.
    pub fn exits_within(&mut self, wait: Duration) -> Option<String> {
        if let Some(exit) = &self.exit {
            return (!exit.is_empty()).then(|| exit.clone());
        }
        let how = end_within(&mut self.child, wait).map(describe);
        self.exit = Some(how.clone().unwrap_or_default());
        how
    }

    /// `; its process exited with status 1` when it has ended (within a moment), for a message
    /// about a channel that broke.
    fn ended(&mut self) -> String {
        match self.exits_within(Duration::from_millis(200)) {
            Some(how) => format!("; its process {how}"),
            None => String::new(),
        }
    }

    /// Its process id (its process group's).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.exits_within(Duration::ZERO);
    }
}

/// ` (its first bytes are "hell": text on stdout?)` when a length looks like text: the usual
/// reason is a `print` to the protocol's descriptor.
fn text_hint(buf: &[u8]) -> String {
    let head = &buf[..buf.len().min(40)];
    let printable = head[..4].iter().all(|b| b.is_ascii_graphic() || *b == b' ');
    if printable {
        let text = String::from_utf8_lossy(head);
        format!(" (its first bytes are {text:?}: text written to stdout, the protocol's descriptor?)")
    } else {
        String::new()
    }
}
