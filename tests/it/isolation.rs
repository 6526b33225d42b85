//! What a plugin's process may use and what its ends leave behind (issue 21): memory and
//! descriptor limits that contain a plugin while the daemon and a calm plugin go on; 50 swaps
//! and 50 crash-restarts that leave no process, descriptor or mapping in the daemon; an old
//! version stuck at its stop that is killed, never alive beside the new one.

use crate::plugins::{alive, build_plugin, cc, children_of, fills_of, install, wait_until, Rig};
use crate::sync::{fill_whole, rest_buy, temp_dir, wait_lines};
use crate::util::{client, paper_with};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A C plugin: `body` is the rest of the file after the includes, which must define the
/// callbacks named in `table` (the `syncd_plugin_v1` fields after `version`).
fn c_plugin(name: &str, version: &str, body: &str, table: &str) -> PathBuf {
    cc(
        name,
        &format!(
            "#include \"binance_syncd_plugin.h\"\n\
             #include <errno.h>\n\
             #include <fcntl.h>\n\
             #include <signal.h>\n\
             #include <stdio.h>\n\
             #include <stdlib.h>\n\
             #include <unistd.h>\n\
             static void *create(const syncd_host_v1 *h) {{ (void)h; static int s; return &s; }}\n\
             {body}\n\
             static syncd_plugin_v1 table = {{ SYNCD_ABI_MAJOR, 0, sizeof(syncd_plugin_v1), 0,\n\
                 {{ (const uint8_t *)\"{version}\", {} }}, create, {table} }};\n\
             const syncd_plugin_v1 *syncd_plugin_entry_v1(const syncd_host_v1 *h) {{ (void)h; return &table; }}\n",
            version.len()
        ),
    )
}

/// The working directory of plugin `name`'s process (where the C plugins here write).
fn workdir(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join("plugins").join("run").join(name)
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(String::from).collect()
}

#[test]
fn a_plugin_over_its_memory_or_descriptor_limit_is_contained_while_a_calm_plugin_goes_on() {
    let calm = build_plugin("test-plugin", "1");
    // Asks for 4 GiB in 16 MiB blocks at its start, writing one byte of each (its resident
    // memory stays small): past its limit malloc returns NULL, and the write kills it.
    let hog = c_plugin(
        "limits_hog",
        "hog",
        "static void destroy(void *s) { (void)s; }\n\
         static void *blocks[256];\n\
         static syncd_status start(void *s, const syncd_start *st) {\n\
             (void)s; (void)st;\n\
             for (int i = 0; i < 256; i++) { volatile char *p = malloc(16 << 20); p[0] = 1; blocks[i] = (void *)p; }\n\
             return SYNCD_STATUS_OK;\n\
         }",
        "destroy, start, 0, 0, 0, 0, 0, 0",
    );
    // Opens /dev/null until it cannot (or 5000 times), then says how far it got and why in
    // opened.txt, closes them all, and goes on.
    let opener = c_plugin(
        "limits_opener",
        "open",
        "static void destroy(void *s) { (void)s; }\n\
         static int fds[5000];\n\
         static syncd_status start(void *s, const syncd_start *st) {\n\
             (void)s; (void)st;\n\
             int n = 0, err = 0;\n\
             while (n < 5000) { int fd = open(\"/dev/null\", O_RDONLY); if (fd < 0) { err = errno; break; } fds[n++] = fd; }\n\
             for (int i = 0; i < n; i++) close(fds[i]);\n\
             FILE *out = fopen(\"opened.txt\", \"w\");\n\
             if (out) { fprintf(out, \"%d %d\\n\", n, err); fclose(out); }\n\
             return SYNCD_STATUS_OK;\n\
         }",
        "destroy, start, 0, 0, 0, 0, 0, 0",
    );
    let dir = temp_dir("plugin-limits-conf");
    let calm_conf = format!("record = {}\nhistory = all\n", dir.join("calm.rec").display());
    let mut rig = Rig::start(
        "plugin-limits",
        &[
            ("calm", &calm, &calm_conf),
            ("hog", &hog, "memory_mb = 64\nrestart_backoff_ms = 50\n"),
            ("opener", &opener, "open_files = 32\nhistory = all\n"),
        ],
    );
    rig.dir = dir;
    let s = rig.wait_status("hog", "quarantined", |s| s.state == "quarantined");
    assert!(s.restarts >= 2 && s.last_exit.contains("SIGSEGV"), "restarted, then quarantined: {s:?}");
    assert!(s.problem.contains("died 3 times in a row"), "{s:?}");
    let opened = workdir(&rig.cfg.state_dir, "opener").join("opened.txt");
    wait_until("the opener's count", Duration::from_secs(20), || lines(&opened).len() == 1);
    let counts: Vec<u32> = lines(&opened)[0].split_whitespace().filter_map(|n| n.parse().ok()).collect();
    // 32 descriptors less the host's own (stdin, stdout, stderr, its channel): its opens fail
    // with EMFILE well before 5000, and it goes on.
    assert!(counts.len() == 2 && counts[0] < 32 && counts[0] >= 20, "opened, errno: {counts:?}");
    assert_eq!(counts[1], libc::EMFILE as u32, "{counts:?}");
    for _ in 0..3 {
        rig.fill();
    }
    let fills = wait_lines(&rig.cfg.fill_log, 3, Duration::from_secs(20));
    let last = fills.iter().map(|f| f.seq).max().unwrap();
    rig.wait_status("calm", "every fill", |s| s.delivered == last);
    let s = rig.wait_status("opener", "every fill", |s| s.delivered == last && s.state == "running");
    assert_eq!(s.restarts, 0, "{s:?}");
    let calm_seen: Vec<u64> = fills_of(&rig.record("calm")).iter().map(|(_, s)| *s).collect();
    assert_eq!(calm_seen, (1..=last).collect::<Vec<u64>>(), "the calm plugin got every fill, once");
    if let Some(d) = rig.daemon.take() {
        d.stop(Duration::from_secs(8));
    }
}

/// The descriptors of process `pid`, each as what it points to (`socket:[N]`, a path...).
fn descriptors(pid: u32) -> Vec<String> {
    let mut fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten().filter_map(|e| std::fs::read_link(e.path()).ok()).map(|t| t.display().to_string()).collect()
        })
        .unwrap_or_default();
    fds.sort();
    fds
}

/// Plugin images (the private copies under the state dir) process `pid` maps.
fn mapped_copies(pid: u32) -> Vec<String> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
    let mut images: Vec<String> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| p.contains("/plugins/images/"))
        .map(String::from)
        .collect();
    images.dedup();
    images
}

/// The plugin a plugin-host process hosts: its `argv[0]` is `binance-syncd:NAME`.
fn hosted(pid: u32) -> Option<String> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let argv0 = cmdline.split(|&b| b == 0).next()?;
    String::from_utf8_lossy(argv0).strip_prefix("binance-syncd:").map(String::from)
}

#[test]
fn fifty_swaps_and_fifty_crash_restarts_leave_no_process_descriptor_or_mapping_behind() {
    use binance_syncd_paper::DEMO_API_KEY;
    let v1 = build_plugin("test-plugin", "1");
    let v2 = build_plugin("test-plugin", "2");
    // Records each start in its working directory, and dies in it while a file `die` is there.
    let crasher = c_plugin(
        "leak_crasher",
        "c1",
        "static void destroy(void *s) { (void)s; }\n\
         static syncd_status start(void *s, const syncd_start *st) {\n\
             (void)s; (void)st;\n\
             int die = access(\"die\", F_OK) == 0;\n\
             FILE *out = fopen(\"starts.txt\", \"a\");\n\
             if (out) { fprintf(out, \"%s\\n\", die ? \"dies\" : \"up\"); fclose(out); }\n\
             if (die) _exit(3);\n\
             return SYNCD_STATUS_OK;\n\
         }",
        "destroy, start, 0, 0, 0, 0, 0, 0",
    );
    let ex = paper_with(|_| {});
    let dir = temp_dir("plugin-leaks");
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let record = dir.join("swap.rec");
    std::fs::write(plugins.join("swap.conf"), format!("record = {}\nhistory = all\n", record.display())).unwrap();
    install(&v1, &plugins, "swap");
    // Restarted 1 ms after each death, never quarantined: 50 restarts take a second or two.
    std::fs::write(
        plugins.join("crash.conf"),
        "restart_backoff_ms = 1\nrestart_backoff_max_ms = 1\nquarantine_after = 0\n",
    )
    .unwrap();
    install(&crasher, &plugins, "crash");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_binance-syncd"));
    cmd.arg("run");
    crate::util::daemon_env(&mut cmd, &ex, &dir, DEMO_API_KEY)
        .env("SYNCD_PLUGIN_DIR", &plugins)
        .env("SYNCD_PLUGIN_SCAN_S", "0.02")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let daemon = crate::util::Killed(cmd.spawn().expect("spawn binance-syncd"));
    let pid = daemon.0.id();
    let state = dir.join("state");
    let starts = workdir(&state, "crash").join("starts.txt");
    let starts_of = |v: &str| lines(&record).iter().filter(|l| **l == format!("start {v}")).count();
    let hosts = || {
        let mut h: Vec<(String, u32)> =
            children_of(pid).into_iter().filter_map(|c| Some((hosted(c)?, c))).filter(|(_, c)| alive(*c)).collect();
        h.sort();
        h
    };
    wait_until("both plugins up", Duration::from_secs(30), || {
        starts_of("1") == 1 && lines(&starts).len() == 1 && hosts().len() == 2
    });
    // A first fill through it all, so that the daemon's connections are those of its steady
    // state before the baseline is taken.
    let rest = client(&ex);
    let order = rest_buy(&ex, &rest, "BTCUSD", "0.01", "web-1");
    fill_whole(&ex, "BTCUSD", order);
    wait_until("the first fill delivered", Duration::from_secs(20), || {
        lines(&record).iter().any(|l| l.starts_with("fill 1 1 "))
    });
    let base_fds = descriptors(pid);
    let base_hosts = hosts();
    assert_eq!(children_of(pid).len(), 2, "{base_hosts:?}");
    assert!(mapped_copies(pid).is_empty(), "the daemon maps no plugin image: {:?}", mapped_copies(pid));

    // 50 crash-restarts: from its next start on, each of its processes dies at its start.
    std::fs::write(workdir(&state, "crash").join("die"), "").unwrap();
    let first = base_hosts.iter().find(|(n, _)| n == "crash").map(|&(_, p)| p).unwrap();
    let _ = Command::new("kill").arg("-KILL").arg(first.to_string()).status();
    // Meanwhile, 50 swaps of the other.
    for i in 1..=50usize {
        let (so, v) = if i % 2 == 1 { (&v2, "2") } else { (&v1, "1") };
        install(so, &plugins, "swap");
        let want = i.div_ceil(2) + usize::from(v == "1");
        wait_until(&format!("swap {i}"), Duration::from_secs(20), || starts_of(v) == want);
    }
    wait_until("50 crash-restarts", Duration::from_secs(60), || {
        lines(&starts).iter().filter(|l| *l == "dies").count() >= 50
    });
    std::fs::remove_file(workdir(&state, "crash").join("die")).unwrap();
    wait_until("the crasher up again", Duration::from_secs(20), || {
        lines(&starts).last().is_some_and(|l| l == "up") && hosts().len() == 2
    });
    let order = rest_buy(&ex, &rest, "BTCUSD", "0.01", "web-2");
    fill_whole(&ex, "BTCUSD", order);
    wait_until("the fill after it all delivered", Duration::from_secs(20), || {
        lines(&record).iter().any(|l| l.starts_with("fill 1 2 "))
    });

    // One process per plugin, and only the daemon's plugin hosts among its children.
    let now = hosts();
    assert_eq!(now.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["crash", "swap"], "{now:?}");
    assert_eq!(children_of(pid).len(), 2, "{now:?}");
    // The same descriptors as before: one channel per plugin, none per version or restart. A
    // slack of 2 for what comes and goes on its own (a REST keep-alive connection the agent
    // closed and opened again, the fill log's reader); a leak of one per swap or restart is
    // 50 or 100.
    let fds = descriptors(pid);
    assert!(
        fds.len() <= base_fds.len() + 2,
        "descriptors {} then {}:\n{base_fds:?}\n{fds:?}",
        base_fds.len(),
        fds.len()
    );
    assert!(mapped_copies(pid).is_empty(), "{:?}", mapped_copies(pid));
    // The private copies are gone from the state dir too (each deleted once mapped).
    let images: Vec<_> = std::fs::read_dir(state.join("plugins").join("images"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(images.is_empty(), "{images:?}");
    println!(
        "after 50 swaps and {} crash-restarts: {} descriptors (baseline {}), children {now:?}",
        lines(&starts).len() - 2,
        fds.len(),
        base_fds.len()
    );
    drop(daemon);
}

/// A C plugin version `v` that records `start V PID PREVIOUS_ALIVE`, `fill V SEQ REPLAYED` and
/// `stop V` in `rec.txt` of its working directory, PREVIOUS_ALIVE saying whether the process of
/// the last `start` line still exists; `hang` in its `stop` or its `destroy`, for ever.
fn recording_plugin(v: &str, hang_in_stop: bool, hang_in_destroy: bool) -> PathBuf {
    let forever = "for (;;) pause();";
    c_plugin(
        &format!("stuck_v{v}"),
        v,
        &format!(
            "static void line(const char *text) {{ FILE *o = fopen(\"rec.txt\", \"a\"); if (o) {{ fputs(text, o); fclose(o); }} }}\n\
             static void destroy(void *s) {{ (void)s; {destroy} }}\n\
             static syncd_status start(void *s, const syncd_start *st) {{\n\
                 (void)s; (void)st;\n\
                 int prev = 0, alive = 0; char l[256];\n\
                 FILE *in = fopen(\"rec.txt\", \"r\");\n\
                 if (in) {{ while (fgets(l, sizeof l, in)) {{ int p; char ver[16]; if (sscanf(l, \"start %15s %d\", ver, &p) == 2) prev = p; }} fclose(in); }}\n\
                 if (prev > 0) alive = kill(prev, 0) == 0;\n\
                 char out[128]; snprintf(out, sizeof out, \"start {v} %d %d\\n\", (int)getpid(), alive); line(out);\n\
                 return SYNCD_STATUS_OK;\n\
             }}\n\
             static syncd_status on_fill(void *s, const syncd_fill *f) {{\n\
                 (void)s; char out[128];\n\
                 snprintf(out, sizeof out, \"fill {v} %llu %d\\n\", (unsigned long long)f->seq, f->replayed); line(out);\n\
                 return SYNCD_STATUS_OK;\n\
             }}\n\
             static syncd_status stop(void *s) {{ (void)s; line(\"stop {v}\\n\"); {stop} return SYNCD_STATUS_OK; }}",
            destroy = if hang_in_destroy { forever } else { "" },
            stop = if hang_in_stop { forever } else { "" },
        ),
        "destroy, start, on_fill, 0, 0, 0, 0, stop",
    )
}

#[test]
fn an_old_version_stuck_at_its_stop_is_killed_and_never_alive_beside_the_new_one() {
    let v1 = recording_plugin("1", true, false);
    let v2 = recording_plugin("2", false, true);
    let v3 = recording_plugin("3", false, false);
    let mut rig = Rig::start("plugin-stuck-stop", &[("stuck", &v1, "history = all\n")]);
    let rec = workdir(&rig.cfg.state_dir, "stuck").join("rec.txt");
    let mut pids = vec![rig.wait_status("stuck", "running", |s| s.state == "running").pid];
    let mut expected = 0;
    for (i, so) in [&v2, &v3].into_iter().enumerate() {
        rig.fill();
        expected += 1;
        let fills = wait_lines(&rig.cfg.fill_log, expected, Duration::from_secs(20));
        let last = fills.iter().map(|f| f.seq).max().unwrap();
        rig.wait_status("stuck", "the fill", |s| s.delivered == last);
        // v1 hangs in its stop callback (killed at the stall limit, 800 ms here), v2 in its
        // destroy after its channel closed (killed 2 s later).
        install(so, &rig.plugins, "stuck");
        let loads = i as u64 + 2;
        let s = rig.wait_status("stuck", "the new version", |s| s.loads == loads && s.state == "running" && s.pid != 0);
        assert!(!alive(pids[i]), "the old process {} is gone", pids[i]);
        pids.push(s.pid);
    }
    rig.fill();
    let fills = wait_lines(&rig.cfg.fill_log, 3, Duration::from_secs(20));
    let last = fills.iter().map(|f| f.seq).max().unwrap();
    rig.wait_status("stuck", "the last fill", |s| s.delivered == last);
    let record = lines(&rec);
    println!("{record:#?}");
    // Each new version's first callback came once the old one's process was gone.
    let starts: Vec<&String> = record.iter().filter(|l| l.starts_with("start ")).collect();
    assert_eq!(starts.len(), 3, "{record:?}");
    for s in &starts {
        assert!(s.ends_with(" 0"), "a version started while the previous one's process was alive: {record:?}");
    }
    // Every fill once, in order, across both swaps; none marked replayed (none was in flight).
    let seen: Vec<&String> = record.iter().filter(|l| l.starts_with("fill ")).collect();
    let seqs: Vec<u64> = seen.iter().filter_map(|l| l.split_whitespace().nth(2)?.parse().ok()).collect();
    assert_eq!(seqs, (1..=last).collect::<Vec<u64>>(), "{record:?}");
    assert!(seen.iter().all(|l| l.ends_with(" 0")), "{record:?}");
    for v in ["1", "2"] {
        assert!(record.contains(&format!("stop {v}")), "{record:?}");
    }
    if let Some(d) = rig.daemon.take() {
        d.stop(Duration::from_secs(8));
    }
}

#[test]
fn a_plugin_process_that_dies_between_callbacks_is_restarted_without_waiting_for_one() {
    let v1 = build_plugin("test-plugin", "1");
    let dir = temp_dir("plugin-death-seen");
    let conf = format!(
        "record = {}\nrestart_backoff_ms = 1\nrestart_backoff_max_ms = 1\nquarantine_after = 0\n",
        dir.join("p.rec").display()
    );
    // One tick at its start, then none for an hour, and no fill: nothing calls into the plugin
    // after its start, so only the death of its process itself can show that it died.
    let mut rig = Rig::start_with("plugin-death-seen", &[("p", &v1, &conf)], |cfg| {
        cfg.plugin_tick = Duration::from_secs(3600);
    });
    rig.dir = dir;
    let first = rig.wait_status("p", "running", |s| s.state == "running" && s.pid != 0);
    wait_until("its first start recorded", Duration::from_secs(30), || rig.record("p").contains(&"start 1".into()));
    let _ = Command::new("kill").arg("-KILL").arg(first.pid.to_string()).status();
    let s = rig.wait_status("p", "restarted in a new process", |s| {
        s.restarts >= 1 && s.state == "running" && s.pid != 0 && s.pid != first.pid
    });
    assert!(s.last_exit.contains("SIGKILL"), "{s:?}");
    assert!(!alive(first.pid), "the dead process was reaped");
    wait_until("its second start recorded", Duration::from_secs(30), || {
        rig.record("p").iter().filter(|l| *l == "start 1").count() == 2
    });
    if let Some(d) = rig.daemon.take() {
        d.stop(Duration::from_secs(8));
    }
}

/// VmRSS of process `pid` in kB, if it is there.
fn rss_kb(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:")?.split_whitespace().next()?.parse().ok())
}

/// The brief's flooding strategy (`submit` in a loop for 400 ms of every tick) beside
/// grid-maker, in a real daemon process: the flooder is held to its budget (busy answers), the
/// daemon's RSS stays under the 48 MB the issue sets (it grew to 364-407 MB before plugins
/// had budgets), and grid-maker's orders reach the exchange all the while.
#[test]
fn a_submit_flood_keeps_the_daemons_rss_under_48_mb_while_grid_maker_trades() {
    use binance_syncd_paper::DEMO_API_KEY;
    let grid = build_plugin("grid-maker", "1");
    let flooder = build_plugin("test-plugin", "1");
    let ex = paper_with(|_| {});
    let dir = temp_dir("plugin-flood-rss");
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let record = dir.join("flood.rec");
    std::fs::write(plugins.join("flooder.conf"), format!("record = {}\nflood_ms = 400\n", record.display())).unwrap();
    std::fs::write(plugins.join("grid_maker.conf"), "levels = 2\nspacing = 5\nquote = 25\n").unwrap();
    install(&flooder, &plugins, "flooder");
    install(&grid, &plugins, "grid_maker");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_binance-syncd"));
    cmd.arg("run");
    crate::util::daemon_env(&mut cmd, &ex, &dir, DEMO_API_KEY)
        .env("SYNCD_PLUGIN_DIR", &plugins)
        .env("SYNCD_PLUGIN_TICK_S", "0.5")
        .env("SYNCD_PRICE_POLL_S", "0.5")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let daemon = crate::util::Killed(cmd.spawn().expect("spawn binance-syncd"));
    let pid = daemon.0.id();
    let floods = || {
        lines(&record)
            .iter()
            .filter_map(|l| {
                let mut p = l.strip_prefix("flooded ")?.split(' ');
                Some((p.next()?.parse::<u64>().ok()?, p.next()?.parse::<u64>().ok()?))
            })
            .collect::<Vec<_>>()
    };
    let rest = client(&ex);
    let grid_orders = || {
        let rows: Vec<serde_json::Value> =
            rest.call_json(&binance_syncd::rest::OPEN_ORDERS, &[("symbol", "BTCUSD")]).unwrap_or_default();
        rows.iter().filter(|o| o["clientOrderId"].as_str().is_some_and(|c| c.starts_with("sd-gridmake-"))).count()
    };
    wait_until("the flood under way", Duration::from_secs(30), || floods().len() >= 2);
    let (mut most, mut samples) = (0u64, 0);
    // Ten more ticks of flooding, the daemon's RSS sampled all along.
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < until {
        most = most.max(rss_kb(pid).expect("the daemon is alive"));
        samples += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    let flooded = floods();
    let (sent, busy) = flooded.iter().fold((0, 0), |(s, b), (n, k)| (s + n, b + k));
    println!("flood: {sent} submits over {} ticks, {busy} answered busy; daemon RSS at most {most} kB", flooded.len());
    assert!(flooded.len() >= 5 && busy > sent / 2, "the flood was not held to its budget: {flooded:?}");
    assert!(samples > 20, "RSS sampled {samples} times");
    assert!(most < 48 * 1024, "the daemon's RSS reached {most} kB under the flood");
    wait_until("grid-maker's quotes at the exchange", Duration::from_secs(20), || grid_orders() >= 2);
    drop(daemon);
}
