//! The daemon's side of an isolated plugin: its child process and the channel to it.
//!
//! Made, used and dropped on the plugin's thread in the daemon (`Runner`), which
//! created the child: `PR_SET_PDEATHSIG` fires when the creating *thread* ends, and this one
//! outlives its child (it reaps it in `Drop`). Every callback is a round trip: one frame out,
//! then the child's intents, rules lookups and log lines answered in order until its `Done`.
//! A callback that runs over the stall limit, a child that dies, or a frame that is too large
//! or malformed ends the child (SIGKILL to its process group), and the call returns
//! [`GONE`]: the plugin's thread then ends, and the watcher restarts it after a backoff.
#![allow(unsafe_code)]

use super::ffi::{HostServices, IntentIn};
use super::proto::{self, Call, Down, Up};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The status a call returns when the child is gone (never a plugin's own status: those are
/// the header's, all above -100).
pub const GONE: i32 = -1000;
/// How long a new child has to load its image and answer `Ready`.
const LOAD_WAIT: Duration = Duration::from_secs(10);
/// How long a child told to go (its channel closed) has to destroy its state and exit.
const EXIT_WAIT: Duration = Duration::from_secs(2);
/// How far past a callback's stall limit a read may wait before the child is killed: a read
/// timeout is set again only when the one set before would end later than that.
const TIMEOUT_SLACK: Duration = Duration::from_millis(5);

/// The `PATH` a plugin's process gets (nothing else of the daemon's environment passes): where
/// a script's `#!/usr/bin/env NAME` finds NAME.
pub const PLUGIN_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

static HOST_PROGRAM: OnceLock<PathBuf> = OnceLock::new();

/// What one plugin's process may use, from `memory_mb` and `open_files` in its `NAME.conf`;
/// the child sets them on itself (soft and hard, so the plugin cannot raise them) before it
/// loads the plugin.
///
/// Memory is `RLIMIT_DATA`, not `RLIMIT_AS`: the address space counts every mapping, also
/// those that hold nothing, such as the 64 MB glibc reserves (`PROT_NONE`) for each malloc arena
/// a new thread gets, and the host binary's own image; a plugin with a few threads would hit
/// it having written little. `RLIMIT_DATA` (Linux 4.7 and later) counts the heap and the
/// private writable mappings, which is what `malloc` hands out (a thread's stack too, 8 MB
/// each). Past it an allocation fails: C's `malloc` returns NULL, Rust's aborts; a plugin that
/// dies of it is a crash like any other (restarted, then quarantined).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `RLIMIT_DATA`, in MiB.
    pub memory_mb: u64,
    /// `RLIMIT_NOFILE`: descriptors, the host's own four included (stdin/stdout on
    /// `/dev/null` and stderr, its channel).
    pub open_files: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { memory_mb: 256, open_files: 64 }
    }
}

impl Limits {
    /// Smallest values accepted (`settings::limits`): what the host itself needs to start and
    /// load an image.
    pub(super) const MIN_MEMORY_MB: u64 = 32;
    pub(super) const MIN_OPEN_FILES: u64 = 16;

    /// As the host role's arguments.
    fn args(&self) -> [String; 4] {
        ["--memory-mb".into(), self.memory_mb.to_string(), "--open-files".into(), self.open_files.to_string()]
    }
}

/// Names the executable that has the `plugin-host` role. `binance-syncd`'s `main` sets
/// `/proc/self/exe` (the daemon's own image, even if its file was replaced since); a program
/// that embeds the daemon as a library (the tests) names the `binance-syncd` binary. Without
/// one, isolated plugins are refused with that reason. The first call wins.
pub fn set_host_program(path: impl Into<PathBuf>) {
    let _ = HOST_PROGRAM.set(path.into());
}

/// The program [`set_host_program`] named.
pub(super) fn host_program() -> Result<&'static Path, String> {
    HOST_PROGRAM.get().map(PathBuf::as_path).ok_or_else(|| "no plugin-host program is known to this process".into())
}

/// How a child ended, in words: `exited with status 3`, `was killed by signal 11 (SIGSEGV)`.
pub fn describe(status: ExitStatus) -> String {
    if let Some(sig) = status.signal() {
        let name = match sig {
            libc::SIGSEGV => " (SIGSEGV)",
            libc::SIGABRT => " (SIGABRT)",
            libc::SIGKILL => " (SIGKILL)",
            libc::SIGBUS => " (SIGBUS)",
            libc::SIGILL => " (SIGILL)",
            libc::SIGFPE => " (SIGFPE)",
            libc::SIGTERM => " (SIGTERM)",
            libc::SIGXCPU => " (SIGXCPU)",
            _ => "",
        };
        format!("was killed by signal {sig}{name}")
    } else {
        format!("exited with status {}", status.code().unwrap_or(-1))
    }
}

/// Starts `program`'s plugin-host role in `workdir` (made private; its last component is the
/// plugin's name) with `extra` arguments after its own, exactly as every plugin is started:
/// the child and the daemon's end of its channel. A program plugin's (`program_plugin`)
/// stderr is piped, for its lines to be logged under its name; a host's is inherited.
pub(super) fn host_child(
    program: &Path,
    workdir: &Path,
    extra: &[String],
    limits: Limits,
    program_plugin: bool,
) -> Result<(Child, UnixStream), String> {
    crate::statedir::create_private_dir(workdir).map_err(|e| format!("{}: {e}", workdir.display()))?;
    let workdir = std::fs::canonicalize(workdir).map_err(|e| format!("{}: {e}", workdir.display()))?;
    let (ours, theirs) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    let theirs_out = theirs.try_clone().map_err(|e| format!("socketpair: {e}"))?;
    // A strategy needs no configuration of the daemon's: nothing of its environment passes
    // (no BINANCE_*, no CREDENTIALS_DIRECTORY, no SYNCD_ALERT_WEBHOOK), only a PATH and a
    // home of its own. Its own process group: a kill reaches what it started too.
    // `ps` shows which plugin a process hosts: binance-syncd:NAME plugin-host --parent PID.
    let name = workdir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut cmd = Command::new(program);
    cmd.arg0(format!("binance-syncd:{name}"))
        .arg("plugin-host")
        .arg("--parent")
        .arg(std::process::id().to_string())
        .args(limits.args())
        .args(extra)
        .env_clear()
        .env("PATH", PLUGIN_PATH)
        .env("HOME", &workdir)
        .current_dir(&workdir)
        .process_group(0)
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::from(OwnedFd::from(theirs_out)))
        // A program plugin's stderr is its own (tracebacks, prints): logged under its name.
        .stderr(if program_plugin { Stdio::piped() } else { Stdio::inherit() });
    if program_plugin {
        // A locale that makes Python's and others' text I/O UTF-8, and its own name. No
        // bytecode files: Python would write `__pycache__` into the plugin folder, which is
        // watched and trusted, not a cache.
        cmd.env("LANG", "C.UTF-8").env("SYNCD_PLUGIN_NAME", &name).env("PYTHONDONTWRITEBYTECODE", "1");
    }
    let child = cmd.spawn().map_err(|e| format!("cannot start {} plugin-host: {e}", program.display()))?;
    Ok((child, ours))
}

/// SIGKILL to `child`'s process group (it leads one: [`host_child`]), what it started too.
/// Call it before the child is reaped.
pub(super) fn kill_group(child: &Child) {
    let pid = child.id() as libc::pid_t;
    // SAFETY: kill with integers only. The caller has not reaped the child yet (only a `wait`
    // on it does), so its pid, which is its process group's id, cannot have been reused.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
}

/// Waits up to `within` for `child` to exit (seen as a zombie in `/proc`: not reaped, so its
/// pid, its process group's id, stays ours), then SIGKILLs its process group, so that what it
/// started (a subprocess, a pool of workers) ends with it, and reaps it. Its exit status, or
/// `None` if it was still running (it is killed all the same).
pub(super) fn end_within(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let pid = child.id().to_string();
    let end = Instant::now() + within;
    let exited = loop {
        match crate::sys::status_field(&pid, "State:") {
            Some(state) if !state.starts_with(['Z', 'X']) => {}
            // A zombie, or gone from /proc (only a wait of ours could reap it).
            _ => break true,
        }
        if Instant::now() >= end {
            break false;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    kill_group(child);
    let status = child.wait().ok();
    if exited {
        status
    } else {
        None
    }
}

/// A running plugin-host child with its plugin loaded.
pub struct Remote {
    child: Child,
    chan: UnixStream,
    /// Fires once the child's process has ended or its end of the channel closed
    /// ([`watch_end`]), so that a death between callbacks is seen at once, not at the next call.
    died: crossbeam_channel::Receiver<()>,
    /// Everything read from `chan` goes through it (one `read` per frame, often fewer).
    frames: proto::FrameReader,
    /// The read timeout `chan` has now, so that a call does not set it again for each read.
    read_timeout: Option<Duration>,
    services: Box<dyn HostServices>,
    stall: Duration,
    version: String,
    abi_minor: u32,
    /// Its plugin exports `on_book`, `on_trade` (from its `Ready`).
    market_wants: (bool, bool),
    /// Why the child is gone, once it is.
    gone: Option<String>,
    /// Whether it was killed for running over the stall limit.
    stalled: bool,
}

impl Remote {
    /// Starts a child in `workdir` and has it load `image`: `Err` with the reason when it
    /// refuses the image or does not answer.
    pub fn spawn(
        image: &Path,
        workdir: &Path,
        services: Box<dyn HostServices>,
        stall: Duration,
        limits: Limits,
    ) -> Result<Remote, String> {
        Remote::spawn_with(host_program()?, image, workdir, services, stall, limits)
    }

    fn spawn_with(
        program: &Path,
        image: &Path,
        workdir: &Path,
        services: Box<dyn HostServices>,
        stall: Duration,
        limits: Limits,
    ) -> Result<Remote, String> {
        let image = std::fs::canonicalize(image).map_err(|e| format!("{}: {e}", image.display()))?;
        let load = Down::Load { proto: proto::PROTO, image: image.to_string_lossy().into_owned() };
        Remote::start(program, workdir, &[], &load, services, stall, limits)
    }

    /// Starts `program`'s plugin-host role with `extra` arguments after its own (`--exec COPY`
    /// for a program plugin) and has it answer `first` (`load`, or `hello` for
    /// a program).
    pub(super) fn start(
        program: &Path,
        workdir: &Path,
        extra: &[String],
        first: &Down,
        services: Box<dyn HostServices>,
        stall: Duration,
        limits: Limits,
    ) -> Result<Remote, String> {
        let (mut child, ours) = host_child(program, workdir, extra, limits, matches!(first, Down::Hello { .. }))?;
        let name = workdir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if let Some(stderr) = child.stderr.take() {
            super::stderr::relay(&name, stderr);
        }
        let died = watch_end(&child, &ours, &name);
        // A plugin that stops reading must not hold this thread in a write for ever: a write
        // that cannot go on for the stall limit counts as the stall it is.
        let _ = ours.set_write_timeout(Some(stall.max(Duration::from_millis(1))));
        let mut remote = Remote {
            child,
            chan: ours,
            died,
            frames: proto::FrameReader::default(),
            read_timeout: None,
            services,
            stall,
            version: String::new(),
            abi_minor: 0,
            market_wants: (false, false),
            gone: None,
            stalled: false,
        };
        if let Err(e) = proto::write_frame(&remote.chan, first, proto::MAX_DOWN) {
            remote.end(format!("cannot send it its first frame: {e}"));
            return Err(remote.gone.take().unwrap_or_default());
        }
        let _ = remote.chan.set_read_timeout(Some(LOAD_WAIT));
        match remote.frames.read::<Up>(&remote.chan, proto::MAX_UP) {
            Ok(Some(Up::Ready { proto: p, version, abi_minor, books, trades })) if p == proto::PROTO => {
                remote.version = version;
                remote.abi_minor = abi_minor;
                remote.market_wants = (books, trades);
                Ok(remote)
            }
            Ok(Some(Up::Refused { why })) => {
                remote.end(String::new());
                Err(why)
            }
            Ok(Some(Up::Ready { proto: p, .. })) => {
                remote.end(String::new());
                Err(format!("it speaks protocol {p}, the daemon {}", proto::PROTO))
            }
            Ok(other) => {
                remote.end(String::new());
                let ended = remote.gone.take().unwrap_or_default();
                Err(format!("its host process did not answer as expected ({other:?}); {ended}"))
            }
            Err(e) => {
                remote.end(String::new());
                let ended = remote.gone.take().unwrap_or_default();
                Err(format!("its host process failed while loading it ({e}); {ended}"))
            }
        }
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn abi_minor(&self) -> u32 {
        self.abi_minor
    }

    /// Whether its plugin exports `on_book`, `on_trade`.
    pub fn market_wants(&self) -> (bool, bool) {
        self.market_wants
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Why the child is gone (its exit status or signal, or what the daemon did to it).
    pub fn gone(&self) -> Option<&str> {
        self.gone.as_deref()
    }

    pub fn stalled(&self) -> bool {
        self.stalled
    }

    /// Fires once the child died or closed its channel (see [`Remote::collect`]).
    pub fn died(&self) -> &crossbeam_channel::Receiver<()> {
        &self.died
    }

    /// After [`Remote::died`] fired: reaps the child (its process group killed first, for
    /// anything it left behind), so that [`Remote::gone`] says how it ended.
    pub fn collect(&mut self) {
        self.end(String::new());
    }

    /// Kills the child's process group and reaps the child; `why` prefixes its exit status.
    fn end(&mut self, why: String) {
        if self.gone.is_some() {
            return;
        }
        kill_group(&self.child);
        let status = self.child.wait().map(describe).unwrap_or_else(|e| format!("could not be waited for: {e}"));
        self.gone =
            Some(if why.is_empty() { format!("its process {status}") } else { format!("{why}; its process {status}") });
    }

    /// Runs one callback in the child; its status, or [`GONE`].
    pub fn call(&mut self, call: &Call) -> i32 {
        if self.gone.is_some() {
            return GONE;
        }
        let deadline = Instant::now() + self.stall;
        if let Err(gone) = self.send(&Down::Call { call: call.clone() }) {
            return gone;
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.time_out_reads(left) {
                return self.over_stall();
            }
            let msg = match self.frames.read::<Up>(&self.chan, proto::MAX_UP) {
                Ok(Some(m)) => m,
                Ok(None) => {
                    self.end(String::new());
                    return GONE;
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    if Instant::now() < deadline {
                        // A timeout set for an earlier read, shorter than what is left.
                        self.read_timeout = None;
                        continue;
                    }
                    return self.over_stall();
                }
                Err(e) => {
                    self.end(format!("it broke the protocol ({e})"));
                    return GONE;
                }
            };
            let answer = match msg {
                Up::Done { status, seq } => {
                    let expected = match call {
                        Call::Fill(f) => f.seq,
                        _ => 0,
                    };
                    if seq != expected {
                        self.end(format!("it acknowledged fill #{seq} for #{expected}"));
                        return GONE;
                    }
                    return status;
                }
                Up::Intent { kind, side, order_id, symbol, price, qty, client_order_id } => {
                    let intent = IntentIn {
                        kind,
                        side,
                        order_id,
                        symbol: &symbol,
                        price: &price,
                        qty: &qty,
                        client_order_id: &client_order_id,
                    };
                    let (request, status) = match self.services.submit(intent) {
                        Ok(id) => (id, 0),
                        Err(status) => (0, status),
                    };
                    Down::Submitted { request, status }
                }
                Up::RulesOf { symbol } => Down::Rules { json: self.services.rules(&symbol) },
                Up::Log { level, msg } => {
                    self.services.log(level, &msg);
                    continue;
                }
                other => {
                    self.end(format!("it sent {other:?} inside a callback"));
                    return GONE;
                }
            };
            if let Err(gone) = self.send(&answer) {
                return gone;
            }
        }
    }

    /// Writes `msg` to the child: `Err(GONE)` once it is ended. A write that cannot go on for
    /// the stall limit (the channel's write timeout) means it stopped reading, inside a call as
    /// much as a callback that never returns: the same stall, killed as one. A child that asks
    /// and asks (rules, intents) without reading the answers fills its channel that way.
    fn send(&mut self, msg: &Down) -> Result<(), i32> {
        match proto::write_frame(&self.chan, msg, proto::MAX_DOWN) {
            Ok(()) => Ok(()),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => Err(self.over_stall()),
            Err(e) => {
                self.end(format!("its channel failed ({e})"));
                Err(GONE)
            }
        }
    }

    /// Has reads of `chan` time out within `left` (and at most [`TIMEOUT_SLACK`] later): the
    /// timeout a call's first read finds is most often the one its previous call set, as good
    /// as new, and the `setsockopt` is skipped. False if it cannot be set.
    fn time_out_reads(&mut self, left: Duration) -> bool {
        if self.read_timeout.is_some_and(|t| t <= left + TIMEOUT_SLACK) {
            return true;
        }
        self.read_timeout = Some(left);
        self.chan.set_read_timeout(Some(left)).is_ok()
    }

    fn over_stall(&mut self) -> i32 {
        self.stalled = true;
        self.end(format!("a callback ran over {:?}: killed", self.stall));
        GONE
    }
}

impl Drop for Remote {
    /// Closes the channel (the child destroys its state and exits) and reaps the child; one
    /// that does not exit in time is killed.
    fn drop(&mut self) {
        if self.gone.is_some() {
            return;
        }
        // The child's end closes when it exits: wait for that on the channel (no polling),
        // reading and dropping whatever it still says.
        let _ = self.chan.shutdown(std::net::Shutdown::Write);
        let _ = self.chan.set_read_timeout(Some(EXIT_WAIT));
        let deadline = Instant::now() + EXIT_WAIT;
        let mut sink = [0u8; 4096];
        while Instant::now() < deadline {
            match io::Read::read(&mut &self.chan, &mut sink) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        // Closed its end: give it the moment exit takes. Its group goes either way.
        let pid = self.child.id();
        match end_within(&mut self.child, Duration::from_millis(200)) {
            Some(status) if !status.success() => log::warn!("plugin host {pid}: it {} at its stop", describe(status)),
            Some(_) => {}
            None => log::warn!("plugin host {pid}: did not exit in time after its stop; killed"),
        }
    }
}

/// A thread that waits, asleep, for `child` to end (its pidfd turns readable; Linux 5.3 and
/// later) or for its end of `chan` to close (the peer hung up: the only sign on older kernels,
/// and a child that closed its channel is of no use either), then fires the returned channel
/// once and ends. It never reaps (the `Remote` does, in `end`), and it ends with the child,
/// which `Remote` always ends: killed if it does not exit when told to.
fn watch_end(child: &Child, chan: &UnixStream, name: &str) -> crossbeam_channel::Receiver<()> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let (tx, rx) = crossbeam_channel::bounded(1);
    // SAFETY: pidfd_open takes a pid and flags (integers). The child is not reaped yet (only
    // `Remote::end` reaps it, later, on this thread), so the pid is still ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::pid_t, 0 as libc::c_uint) };
    // SAFETY: a descriptor pidfd_open just returned (close-on-exec), owned by nothing else.
    let pidfd = (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) });
    // Without the thread, a death is seen at the next call, as before it existed.
    let Ok(peer) = chan.try_clone() else { return crossbeam_channel::never() };
    let waits = std::thread::Builder::new().name(format!("plugin-end:{name}")).stack_size(64 << 10).spawn(move || {
        let mut fds = [
            libc::pollfd { fd: pidfd.as_ref().map_or(-1, |f| f.as_raw_fd()), events: libc::POLLIN, revents: 0 },
            // Hang-up only: a frame waiting to be read is the plugin thread's, and no sign.
            libc::pollfd { fd: peer.as_raw_fd(), events: libc::POLLRDHUP, revents: 0 },
        ];
        loop {
            // SAFETY: poll reads and writes the two `pollfd`s of the array we own, for its
            // length; both descriptors stay open until this thread returns (a negative one is
            // ignored by poll).
            let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
            if rc > 0 || std::io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                break;
            }
        }
        let _ = tx.send(());
    });
    match waits {
        Ok(_) => rx,
        Err(e) => {
            log::warn!(
                "plugin {name}: cannot start a thread to watch its process ({e}); a death shows at its next call"
            );
            crossbeam_channel::never()
        }
    }
}

/// What a plugin's process uses, read from `/proc` (world-readable even though the child is
/// not dumpable): CPU time since its start and resident memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub cpu: std::time::Duration,
    pub rss_bytes: u64,
}

/// [`Usage`] of process `pid`; `None` for pid 0 (not isolated, or no process now) or a process
/// that is gone.
pub fn usage(pid: u32) -> Option<Usage> {
    if pid == 0 {
        return None;
    }
    // schedstat's first field is the time spent on a CPU, in ns: no clock-tick size to know.
    let sched = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).ok()?;
    let cpu_ns: u64 = sched.split_whitespace().next()?.parse().ok()?;
    let rss_kb: u64 =
        crate::sys::status_field(&pid.to_string(), "VmRSS:")?.trim_end_matches("kB").trim().parse().ok()?;
    Some(Usage { cpu: std::time::Duration::from_nanos(cpu_ns), rss_bytes: rss_kb * 1024 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_go_to_the_host_role_as_arguments() {
        assert_eq!(Limits { memory_mb: 64, open_files: 32 }.args()[1], "64");
    }

    #[test]
    fn usage_reads_a_live_process_and_nothing_for_pid_0() {
        let me = usage(std::process::id()).expect("this process's usage");
        assert!(me.rss_bytes > 0);
        assert_eq!(usage(0), None);
    }
    use crate::plugin::proto::FillMsg;

    struct Nothing;

    impl HostServices for Nothing {
        fn submit(&self, _: IntentIn<'_>) -> Result<u64, i32> {
            Err(-3)
        }
        fn log(&self, _: i32, _: &str) {}
        fn rules(&self, _: &str) -> Option<String> {
            None
        }
    }

    /// `bytes` as a `printf` format: every byte an octal escape.
    fn printf(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("\\{b:03o}")).collect()
    }

    fn frame(msg: &Up) -> Vec<u8> {
        let mut out = Vec::new();
        proto::write_frame(&mut out, msg, proto::MAX_UP).unwrap();
        out
    }

    /// A stand-in plugin host: a shell script that answers `Ready`, then writes `then` and
    /// sleeps (only a kill ends it).
    fn fake_host(name: &str, then: &[u8]) -> (PathBuf, PathBuf) {
        fake_host_running(name, &format!("printf '{}'\nexec sleep 30", printf(then)))
    }

    /// A stand-in plugin host that answers `Ready`, then runs the shell commands `then`.
    fn fake_host_running(name: &str, then: &str) -> (PathBuf, PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("syncd-remote-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ready = frame(&Up::Ready {
            proto: proto::PROTO,
            version: "fake".into(),
            abi_minor: 2,
            books: false,
            trades: false,
        });
        let script = dir.join("host.sh");
        let body = format!("#!/bin/sh\nprintf '{}'\n{then}\n", printf(&ready));
        std::fs::write(&script, body).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700)).unwrap();
        (script, dir)
    }

    fn fill(seq: u64) -> Call {
        Call::Fill(FillMsg { seq, ..Default::default() })
    }

    fn run(name: &str, then: &[u8], stall: Duration) -> Remote {
        let (script, dir) = fake_host(name, then);
        let mut r = Remote::spawn_with(&script, &script, &dir.join("run"), Box::new(Nothing), stall, Limits::default())
            .unwrap();
        assert_eq!((r.version(), r.abi_minor()), ("fake", 2));
        assert_eq!(r.call(&fill(1)), GONE, "{name}");
        assert_eq!(r.call(&fill(1)), GONE, "{name}: gone stays gone");
        r
    }

    #[test]
    fn a_child_that_never_reads_is_killed_as_a_stall_when_a_write_to_it_cannot_finish() {
        let stall = Duration::from_millis(300);
        // A call frame larger than the channel holds, to a child that reads nothing.
        let (script, dir) = fake_host("deaf", b"");
        let mut r = Remote::spawn_with(&script, &script, &dir.join("run"), Box::new(Nothing), stall, Limits::default())
            .unwrap();
        let big = Call::Fill(FillMsg { seq: 1, symbol: "X".repeat(4 << 20), ..Default::default() });
        assert_eq!(r.call(&big), GONE);
        assert!(r.stalled() && r.gone().unwrap().contains("ran over"), "{:?}", r.gone());
        // A child that asks for rules over and over and never reads the answers: the daemon's
        // answers fill the channel.
        let ask = printf(&frame(&Up::RulesOf { symbol: "BTCUSD".into() }));
        let (script, dir) = fake_host_running("asks", &format!("while :; do printf '{ask}'; done"));
        let mut r = Remote::spawn_with(&script, &script, &dir.join("run"), Box::new(Nothing), stall, Limits::default())
            .unwrap();
        assert_eq!(r.call(&fill(1)), GONE);
        assert!(r.stalled() && r.gone().unwrap().contains("ran over"), "{:?}", r.gone());
    }

    #[test]
    fn a_malformed_oversized_or_wrong_frame_ends_the_child_and_only_it() {
        let long = Duration::from_secs(20);
        let r = run("junk", b"\x00\x00\x00\x05{\"t\":", long);
        let why = r.gone().unwrap();
        assert!(why.contains("broke the protocol") && why.contains("SIGKILL"), "{why}");
        let r = run("huge", b"\xff\xff\xff\xff", long);
        assert!(r.gone().unwrap().contains("over the 1048576 allowed"), "{:?}", r.gone());
        let r = run("wrong-ack", &frame(&Up::Done { status: 0, seq: 9 }), long);
        assert!(r.gone().unwrap().contains("acknowledged fill #9 for #1"), "{:?}", r.gone());
        let r = run("out-of-turn", &frame(&Up::Refused { why: "x".into() }), long);
        assert!(r.gone().unwrap().contains("inside a callback"), "{:?}", r.gone());
        // One that says nothing: killed once the call is over the stall limit.
        let r = run("silent", b"", Duration::from_millis(100));
        assert!(r.stalled() && r.gone().unwrap().contains("ran over"), "{:?}", r.gone());
        // One that ends by itself: its exit status, in words.
        let (script, dir) = fake_host("exits", b"");
        std::fs::write(&script, "#!/bin/sh\nexit 7\n").unwrap();
        let e = Remote::spawn_with(&script, &script, &dir.join("run"), Box::new(Nothing), long, Limits::default())
            .err()
            .unwrap();
        assert!(e.contains("exited with status 7"), "{e}");
    }
}
