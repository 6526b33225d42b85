//! The plugin-host role: `binance-syncd plugin-host --parent PID`, started by the daemon only
//! (not in `--help`), with one end of a socket pair as its stdin and stdout ([`super::proto`]).
//! It loads one plugin image with the same code as the in-process path ([`super::ffi`]) and
//! runs its callbacks as the daemon asks, on its main thread (the ABI's one thread).
//!
//! Before anything of the plugin runs, the process makes itself hold and reach as little as it
//! can: every descriptor but the channel and stderr closed, stdout pointed at stderr (a stray
//! `printf` in a plugin must not corrupt the protocol), `PR_SET_NO_NEW_PRIVS`, death with the
//! daemon (`PR_SET_PDEATHSIG` SIGKILL, then the parent checked: if it died before the call no
//! signal would come), no core file (`RLIMIT_CORE` 0) and not dumpable (another plugin of the
//! same user cannot read this one's memory), and the plugin's memory and descriptor limits
//! ([`Limits`], hard ones). Its environment was cleared by the daemon.
#![allow(unsafe_code)]

use super::ffi::{HostServices, IntentIn, Plugin};
use super::proto::{self, Down, Up};
use super::remote::Limits;
use std::cell::RefCell;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::rc::Rc;

/// Exit codes of the role (the daemon logs them).
const USAGE: i32 = 2;
const ORPHAN: i32 = 3;
const PROTOCOL: i32 = 4;

fn fail(code: i32, why: &str) -> i32 {
    eprintln!("binance-syncd plugin-host: {why}");
    code
}

/// Whether descriptor 0 is a socket: the role is started with its channel there, and refuses
/// to run from a terminal or a pipe.
fn stdin_is_socket() -> bool {
    let mut st = std::mem::MaybeUninit::<libc::stat>::zeroed();
    // SAFETY: fstat writes one `struct stat` into the buffer we own; descriptor 0 is only read.
    let rc = unsafe { libc::fstat(0, st.as_mut_ptr()) };
    // SAFETY: fstat succeeded, so it filled the structure (and it was zeroed before anyway).
    rc == 0 && (unsafe { st.assume_init() }.st_mode & libc::S_IFMT) == libc::S_IFSOCK
}

/// No privilege gained through exec from here on, killed when the daemon dies, no core file.
fn confine(parent: i32) -> Result<(), String> {
    // SAFETY: prctl with integer arguments only; no memory of ours is touched.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong, 0) }
        != 0
    {
        return Err(format!("PR_SET_NO_NEW_PRIVS: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: as above; the signal number is an integer argument.
    if unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong, 0)
    } != 0
    {
        return Err(format!("PR_SET_PDEATHSIG: {}", std::io::Error::last_os_error()));
    }
    // After the call: a daemon that died before it sent no signal, and we were reparented.
    // SAFETY: getppid takes no arguments and cannot fail.
    if unsafe { libc::getppid() } != parent {
        return Err(format!("the daemon (pid {parent}) is gone"));
    }
    let none = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: setrlimit reads the structure we pass for the duration of the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &none) } != 0 {
        return Err(format!("RLIMIT_CORE: {}", std::io::Error::last_os_error()));
    }
    drop_capabilities()?;
    super::harden::forbid_dumping().map_err(|e| format!("PR_SET_DUMPABLE: {e}"))
}

/// A capability set as `/proc/self/status` shows it (`CapPrm:`, `CapEff:`, `CapBnd:`...).
fn cap_line(name: &str) -> Option<u64> {
    u64::from_str_radix(&crate::sys::status_field("self", name)?, 16).ok()
}

/// A daemon run as root starts its plugin hosts with every capability (exec as uid 0 fills the
/// permitted set from the bounding set). A strategy needs none: empty the bounding set (so no
/// later exec regains any), lock the securebits that would give them back to uid 0, clear the
/// ambient set, then the effective, permitted and inheritable sets. It stays uid 0, which files
/// owned by root still answer to: run the daemon as its own user (the unit's `DynamicUser`).
fn drop_capabilities() -> Result<(), String> {
    if cap_line("CapPrm:").unwrap_or(0) == 0 && cap_line("CapBnd:").unwrap_or(0) == 0 {
        return Ok(());
    }
    // CAP_SETPCAP (8, linux/capability.h) allows changing the bounding set and the securebits.
    const CAP_SETPCAP: u32 = 8;
    let has_setpcap = cap_line("CapEff:").is_some_and(|eff| eff & (1 << CAP_SETPCAP) != 0);
    if has_setpcap {
        for cap in 0..64 {
            // SAFETY: prctl with integer arguments only. EINVAL past the kernel's last
            // capability ends the loop.
            if unsafe {
                libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong, 0)
            } != 0
            {
                break;
            }
        }
        let bits = libc::SECBIT_NOROOT
            | libc::SECBIT_NOROOT_LOCKED
            | libc::SECBIT_NO_SETUID_FIXUP
            | libc::SECBIT_NO_SETUID_FIXUP_LOCKED
            | libc::SECBIT_KEEP_CAPS_LOCKED
            | libc::SECBIT_NO_CAP_AMBIENT_RAISE
            | libc::SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;
        // SAFETY: prctl with integer arguments only.
        if unsafe {
            libc::prctl(libc::PR_SET_SECUREBITS, bits as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong, 0)
        } != 0
        {
            return Err(format!("PR_SET_SECUREBITS: {}", std::io::Error::last_os_error()));
        }
    }
    // SAFETY: prctl with integer arguments only; fails harmlessly (EINVAL) on kernels without
    // ambient capabilities, which then have none to clear.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0,
        )
    };
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    // _LINUX_CAPABILITY_VERSION_3: two data words (capabilities 0-31 and 32-63).
    let mut header = Header { version: 0x2008_0522, pid: 0 };
    let data = [Data { effective: 0, permitted: 0, inheritable: 0 }; 2];
    // SAFETY: capset reads a version-3 header and two data structures, laid out as the kernel's
    // __user_cap_header_struct and __user_cap_data_struct (repr(C), u32/i32 fields), that live
    // on this stack frame for the whole call; pid 0 means this thread.
    if unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()) } != 0 {
        return Err(format!("capset: {}", std::io::Error::last_os_error()));
    }
    match cap_line("CapEff:") {
        Some(0) => Ok(()),
        other => Err(format!("capabilities still held after dropping them: {other:?}")),
    }
}

/// Closes every descriptor from 3 up (std opens its own with CLOEXEC; a descriptor the
/// daemon's in-process plugins or libraries opened without it would otherwise reach here).
fn close_inherited() {
    // SAFETY: close_range takes integers and closes descriptors of this process only; nothing
    // in this process uses a descriptor above 2 yet (no thread, no file opened).
    let rc = unsafe { libc::syscall(libc::SYS_close_range, 3 as libc::c_uint, libc::c_uint::MAX, 0 as libc::c_uint) };
    if rc != 0 {
        // Before Linux 5.9: one by one, as listed by the kernel.
        let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
            .map(|d| d.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect())
            .unwrap_or_default();
        for fd in fds.into_iter().filter(|&fd| fd > 2) {
            // SAFETY: closes a descriptor of this process that nothing here owns.
            unsafe { libc::close(fd) };
        }
    }
}

/// [`close_inherited`], then moves the channel off 0/1 and points stdout at stderr, stdin at
/// nothing.
fn take_channel() -> Result<UnixStream, String> {
    close_inherited();
    // SAFETY: duplicates descriptor 0 (the channel, checked a socket) to the lowest free number
    // with close-on-exec set; the new descriptor is ours alone.
    let chan = unsafe { libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 3) };
    if chan < 0 {
        return Err(format!("cannot take the channel: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: `chan` was just created above and is owned by nothing else.
    let stream = UnixStream::from(unsafe { OwnedFd::from_raw_fd(chan) });
    let null = std::fs::File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
    // SAFETY: dup2 onto 0 and 1 replaces the channel's other copies with /dev/null and
    // stderr; `null` stays open for the call, and 2 is the inherited stderr.
    let ok = unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 0) >= 0 && libc::dup2(2, 1) >= 0 };
    if !ok {
        return Err(format!("cannot redirect stdin/stdout: {}", std::io::Error::last_os_error()));
    }
    Ok(stream)
}

/// The channel, with the one reader of its frames: shared by the role's loop and the host
/// functions (callbacks run inside the loop, on the same thread).
struct Chan {
    stream: UnixStream,
    frames: RefCell<proto::FrameReader>,
}

impl Chan {
    fn read(&self) -> std::io::Result<Option<Down>> {
        self.frames.borrow_mut().read(&self.stream, proto::MAX_DOWN)
    }
}

/// The host functions of a plugin in this process: forwarded to the daemon, each waiting for
/// its answer (the C functions are synchronous, and stay so).
struct Forward {
    chan: Rc<Chan>,
}

impl Forward {
    fn send(&self, msg: &Up) {
        if proto::write_frame(&self.chan.stream, msg, proto::MAX_UP).is_err() {
            // The daemon is gone or refused us: nothing of ours can be trusted to go on.
            std::process::exit(PROTOCOL);
        }
    }

    fn answer(&self) -> Down {
        match self.chan.read() {
            Ok(Some(d)) => d,
            _ => std::process::exit(PROTOCOL),
        }
    }
}

impl HostServices for Forward {
    fn submit(&self, i: IntentIn<'_>) -> Result<u64, i32> {
        self.send(&Up::Intent {
            kind: i.kind,
            side: i.side,
            order_id: i.order_id,
            symbol: i.symbol.to_string(),
            price: i.price.to_string(),
            qty: i.qty.to_string(),
            client_order_id: i.client_order_id.to_string(),
        });
        match self.answer() {
            Down::Submitted { request, status: 0 } => Ok(request),
            Down::Submitted { status, .. } => Err(status),
            _ => std::process::exit(PROTOCOL),
        }
    }

    fn log(&self, level: i32, msg: &str) {
        self.send(&Up::Log { level, msg: proto::cut(msg, proto::MAX_LOG).to_string() });
    }

    fn rules(&self, symbol: &str) -> Option<String> {
        self.send(&Up::RulesOf { symbol: symbol.to_string() });
        match self.answer() {
            Down::Rules { json } => json,
            _ => std::process::exit(PROTOCOL),
        }
    }
}

/// What the role was asked to do.
struct Args {
    parent: i32,
    limits: Limits,
    /// `--exec PATH`: a program plugin to run in this process, rather than a `.so` to load.
    exec: Option<String>,
    /// `--dir PATH`: the plugin folder, for a program plugin's `SYNCD_PLUGIN_DIR`.
    dir: Option<String>,
}

/// `--parent PID [--memory-mb N --open-files N] [--exec PATH [--dir PLUGIN_DIR]]` (without the limits: the
/// defaults).
fn parse_args(args: &[String]) -> Option<Args> {
    let (flag, pid, mut rest) = match args {
        [flag, pid, rest @ ..] => (flag, pid, rest),
        _ => return None,
    };
    if flag != "--parent" {
        return None;
    }
    let mut out = Args { parent: pid.parse().ok()?, limits: Limits::default(), exec: None, dir: None };
    while let [key, value, tail @ ..] = rest {
        match key.as_str() {
            "--memory-mb" => out.limits.memory_mb = value.parse().ok()?,
            "--open-files" => out.limits.open_files = value.parse().ok()?,
            "--exec" => out.exec = Some(value.clone()),
            "--dir" => out.dir = Some(value.clone()),
            _ => return None,
        }
        rest = tail;
    }
    rest.is_empty().then_some(out)
}

/// Becomes program plugin `path`, confined as this process is (no new privileges, death with
/// the daemon, no core, no capabilities, the limits; these survive `execve`), with the channel
/// left on 0 and 1 and nothing open above 2. Not dumpable does not survive it: Linux sets the
/// flag back to 1 for a readable image (docs/plugin-protocol.md, "The process", says what that
/// exposes). Returns only if the exec failed.
fn become_program(path: &str, dir: Option<&str>) -> i32 {
    use std::os::unix::process::CommandExt;
    close_inherited();
    // The environment is the one the daemon gave this process, and the plugin folder (where a
    // script's own modules are: it runs from a copy); 0, 1 and 2 stay as they are. Python
    // looks for modules beside the script it runs, which is the copy in the state directory:
    // `PYTHONPATH` names the folder, so that `import binance_syncd` finds the SDK copied
    // beside the installed file, as a user expects.
    let mut cmd = std::process::Command::new(path);
    if let Some(dir) = dir {
        cmd.env("SYNCD_PLUGIN_DIR", dir).env("PYTHONPATH", dir);
    }
    let e = cmd.exec();
    fail(PROTOCOL, &format!("cannot run {path}: {e}"))
}

/// Sets the plugin's [`Limits`] on this process, hard limits too: the plugin, which runs as
/// this process, cannot raise them again.
fn limit(limits: Limits) -> Result<(), String> {
    for (resource, value, what) in [
        (libc::RLIMIT_DATA, limits.memory_mb.saturating_mul(1 << 20), "RLIMIT_DATA"),
        (libc::RLIMIT_NOFILE, limits.open_files, "RLIMIT_NOFILE"),
    ] {
        let mut current = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes one `struct rlimit` into the one we own on this frame.
        if unsafe { libc::getrlimit(resource, &mut current) } != 0 {
            return Err(format!("{what}: {}", std::io::Error::last_os_error()));
        }
        // Never above what the daemon was given: lowering needs no privilege, raising does.
        let value = value.min(current.rlim_max);
        let new = libc::rlimit { rlim_cur: value, rlim_max: value };
        // SAFETY: setrlimit reads the structure we pass for the duration of the call.
        if unsafe { libc::setrlimit(resource, &new) } != 0 {
            return Err(format!("{what}: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// The role's `main`: `args` are those after `plugin-host`. Returns the exit code.
pub fn main(args: &[String]) -> i32 {
    let Some(Args { parent, limits, exec, dir }) = parse_args(args) else {
        return fail(USAGE, "an internal role of the daemon, started by it only");
    };
    if !stdin_is_socket() {
        return fail(USAGE, "an internal role of the daemon: its stdin must be the daemon's socket");
    }
    if let Err(why) = confine(parent) {
        return fail(ORPHAN, &why);
    }
    if let Err(why) = limit(limits) {
        return fail(ORPHAN, &why);
    }
    if let Some(path) = exec {
        return become_program(&path, dir.as_deref());
    }
    let chan = match take_channel() {
        Ok(c) => c,
        Err(why) => return fail(PROTOCOL, &why),
    };
    let chan = Rc::new(Chan { stream: chan, frames: RefCell::default() });
    let image = match chan.read() {
        Ok(Some(Down::Load { proto: p, image })) if p == proto::PROTO => image,
        Ok(Some(Down::Load { proto: p, .. })) => {
            let why = format!("protocol {p} asked, this host speaks {}", proto::PROTO);
            let _ = proto::write_frame(&chan.stream, &Up::Refused { why: why.clone() }, proto::MAX_UP);
            return fail(PROTOCOL, &why);
        }
        _ => return fail(PROTOCOL, "no load request"),
    };
    let mut plugin = match Plugin::load(std::path::Path::new(&image), Box::new(Forward { chan: chan.clone() })) {
        Ok(p) => p,
        Err(e) => {
            let _ = proto::write_frame(&chan.stream, &Up::Refused { why: e.to_string() }, proto::MAX_UP);
            return 0;
        }
    };
    let (books, trades) = plugin.market_wants();
    let ready = Up::Ready {
        proto: proto::PROTO,
        version: plugin.version().to_string(),
        abi_minor: plugin.abi_minor(),
        books,
        trades,
    };
    if proto::write_frame(&chan.stream, &ready, proto::MAX_UP).is_err() {
        return fail(PROTOCOL, "the daemon hung up");
    }
    loop {
        match chan.read() {
            Ok(Some(Down::Call { call })) => {
                let seq = match &call {
                    proto::Call::Fill(f) => f.seq,
                    _ => 0,
                };
                let status = proto::invoke(&mut plugin, &call);
                if proto::write_frame(&chan.stream, &Up::Done { status, seq }, proto::MAX_UP).is_err() {
                    break;
                }
            }
            // The daemon closed the channel: it is done with this version.
            Ok(None) => break,
            Ok(Some(other)) => return fail(PROTOCOL, &format!("unexpected {other:?}")),
            Err(e) => return fail(PROTOCOL, &e.to_string()),
        }
    }
    drop(plugin); // destroy, then close the library, on the thread it ran on
    0
}
