//! The daemon's market thread on the paper exchange's public streams (issue 22): its book
//! equals the exchange's after drops, gaps, a silent socket and a stale snapshot; no
//! `ticker/bookTicker` poll while the stream is up and polls again while it is refused; a
//! re-snapshot after every gap, paced; an order's crossing check on the stream's touch;
//! grid-maker quoting around the stream's touch and re-quoting on its moves without a tick;
//! `check`'s market row; the demo's status line with the books' age.

use crate::sync::{config, fast, temp_dir};
use crate::util::{init_log, paper_with};
use binance_syncd::daemon::Daemon;
use binance_syncd::executor::{Intent, Outcome};
use binance_syncd::market::book::Level;
use binance_syncd::market::SymbolMarket;
use binance_syncd::model::Side;
use binance_syncd::Decimal;
use binance_syncd_paper::PaperExchange;
use std::time::{Duration, Instant};

const BOOK_TICKER: &str = "/api/v3/ticker/bookTicker";

struct Rig {
    ex: PaperExchange,
    daemon: Daemon,
}

impl Rig {
    /// A paper market moving every 50 ms and a daemon on it, its books synced.
    fn start(name: &str) -> Rig {
        init_log();
        let ex = paper_with(|c| c.market_tick = Duration::from_millis(50));
        let dir = temp_dir(name);
        let cfg = config(&ex, &dir);
        let daemon = Daemon::start(&cfg, &fast()).unwrap();
        let rig = Rig { ex, daemon };
        rig.wait("both books synced", Duration::from_secs(15), |r| {
            ["BTCUSD", "ETHUSD"].iter().all(|s| r.symbol(s).synced)
        });
        rig
    }

    fn symbol(&self, s: &str) -> SymbolMarket {
        self.daemon.market().expect("market stream on").state().symbols.get(s).cloned().unwrap_or_default()
    }

    fn fault(&self, name: &str, params: &[(&str, &str)]) {
        self.ex.fault(name, params).unwrap();
    }

    fn requests(&self, path: &str) -> u64 {
        self.ex.report()["requests_by_path"][path].as_u64().unwrap_or(0)
    }

    fn wait(&self, what: &str, within: Duration, ok: impl Fn(&Rig) -> bool) {
        let end = Instant::now() + within;
        while !ok(self) {
            assert!(Instant::now() < end, "{what}: not within {within:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The exchange's best 20 levels a side and update id.
    fn paper_book(&self, symbol: &str) -> (u64, Vec<Level>, Vec<Level>) {
        let v = self.ex.shared().engine.lock().unwrap().depth(symbol, 20, 0).unwrap();
        let side = |k: &str| {
            v[k].as_array()
                .unwrap()
                .iter()
                .map(|l| (l[0].as_str().unwrap().parse().unwrap(), l[1].as_str().unwrap().parse().unwrap()))
                .collect()
        };
        (v["lastUpdateId"].as_u64().unwrap(), side("bids"), side("asks"))
    }

    /// With the market held still, the daemon's book of each symbol reaches the exchange's
    /// update id and then has the same best 20 levels. Up to 70 s: under load a resync may
    /// have to wait for the daemon's snapshot pace (4 a minute) to allow it.
    fn books_equal(&self, after: &str) {
        // Synced first, with the market moving: a book asks its snapshot once a diff arrived,
        // and a still market sends none.
        self.wait(&format!("{after}: both books synced"), Duration::from_secs(70), |r| {
            ["BTCUSD", "ETHUSD"].iter().all(|s| r.symbol(s).synced)
        });
        self.fault("quiesce", &[]);
        for s in ["BTCUSD", "ETHUSD"] {
            let (id, bids, asks) = self.paper_book(s);
            self.wait(&format!("{after}: {s} at update {id}"), Duration::from_secs(70), |r| {
                let m = r.symbol(s);
                m.synced && m.book_id == Some(id)
            });
            let m = self.symbol(s);
            assert_eq!(m.levels.0, bids, "{after}: {s} bids");
            assert_eq!(m.levels.1, asks, "{after}: {s} asks");
            assert_eq!(m.top.map(|t| (t.bid, t.ask)), Some((bids[0].0, asks[0].0)), "{after}: {s} top");
        }
        self.fault("resume", &[]);
    }
}

// The daemon takes at most 4 snapshots a symbol in any minute: each test below stays within
// them (start, then one per fault), or it would wait out the window.
#[test]
fn the_daemons_book_equals_the_exchanges_after_a_drop_a_gap_and_silence() {
    let rig = Rig::start("market-equal");
    rig.books_equal("start");
    let sessions = |r: &Rig| r.daemon.market().unwrap().state().sessions;

    let before = sessions(&rig);
    rig.fault("market_drop", &[("mode", "rst")]);
    rig.wait("a new session after the drop", Duration::from_secs(15), |r| sessions(r) > before);
    rig.books_equal("drop");

    let gaps = rig.symbol("BTCUSD").gaps;
    rig.fault("market_gap", &[("symbol", "BTCUSD")]);
    rig.wait("the gap seen", Duration::from_secs(10), |r| r.symbol("BTCUSD").gaps > gaps);
    rig.books_equal("gap");

    let before = sessions(&rig);
    rig.fault("market_silent", &[]);
    rig.wait("a new session after the silence", Duration::from_secs(20), |r| sessions(r) > before);
    rig.books_equal("silence");
}

#[test]
fn a_stale_snapshot_is_refused_and_the_book_still_equals_the_exchanges() {
    let rig = Rig::start("market-stale");
    rig.books_equal("start");
    // A gap whose re-snapshot is older than the stream: it cannot be joined, and another is asked.
    let failures = rig.symbol("ETHUSD").snapshot_failures;
    rig.fault("stale_depth", &[("symbol", "ETHUSD"), ("back", "64")]);
    rig.fault("market_gap", &[("symbol", "ETHUSD")]);
    rig.wait("the stale snapshot refused", Duration::from_secs(15), |r| {
        r.symbol("ETHUSD").snapshot_failures > failures
    });
    crate::util::assert_fired(&rig.ex.report(), "rest/stale_depth");
    rig.books_equal("stale snapshot");
}

#[test]
fn no_book_ticker_poll_while_the_stream_is_up_and_polls_while_it_is_refused() {
    let rig = Rig::start("market-polls");
    let polls = rig.requests(BOOK_TICKER);
    let rest_quotes = rig.daemon.market().unwrap().state().rest_quotes;
    // Four price-poll periods (500 ms) with the stream up: not one poll.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(rig.requests(BOOK_TICKER), polls, "bookTicker polled while the stream was up");
    assert_eq!(rig.daemon.market().unwrap().state().rest_quotes, rest_quotes);

    rig.fault("market_drop", &[("mode", "rst"), ("refuse_ms", "8000")]);
    rig.wait("polling again while refused", Duration::from_secs(10), |r| r.requests(BOOK_TICKER) > polls);
    rig.wait("the refusal seen", Duration::from_secs(10), |r| r.daemon.market().unwrap().state().connect_failures > 0);
}

#[test]
fn a_resnapshot_follows_every_gap_and_at_most_four_a_minute() {
    let rig = Rig::start("market-gaps");
    let snapshots = |r: &Rig| r.symbol("BTCUSD").snapshots;
    for i in 0..2 {
        let (gaps, before) = (rig.symbol("BTCUSD").gaps, snapshots(&rig));
        rig.fault("market_gap", &[("symbol", "BTCUSD")]);
        rig.wait(&format!("gap {i} seen"), Duration::from_secs(10), |r| r.symbol("BTCUSD").gaps > gaps);
        rig.wait(&format!("gap {i} re-snapshotted"), Duration::from_secs(15), |r| {
            snapshots(r) > before && r.symbol("BTCUSD").synced
        });
    }
    // A storm of gaps, one every 300 ms: the snapshots stay within the pace (4 in any minute,
    // the first included). While a book waits for its paced snapshot it has no gap to see.
    let gaps = rig.symbol("BTCUSD").gaps;
    for _ in 0..10 {
        rig.fault("market_gap", &[("symbol", "BTCUSD")]);
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(rig.symbol("BTCUSD").gaps > gaps, "the storm was seen");
    let m = rig.symbol("BTCUSD");
    assert!(m.snapshots <= 4, "{} snapshots of BTCUSD within a minute", m.snapshots);
    let depth = rig.requests("/api/v3/depth");
    assert!(depth <= 8, "{depth} depth requests for two symbols within a minute");
}

#[test]
fn an_orders_crossing_check_uses_the_streams_touch() {
    let rig = Rig::start("market-touch");
    rig.fault("quiesce", &[]);
    let (strategy, replies) = rig.daemon.executor().strategy("touch").unwrap();
    let quotes = rig.daemon.market().unwrap().state().rest_quotes;
    let polls = rig.requests(BOOK_TICKER);
    for i in 0..5 {
        // Move the market up; a buy at the old ask would now rest, one at the new ask crosses.
        let (bid, _) = rig.ex.shared().engine.lock().unwrap().touch("BTCUSD").unwrap();
        let up = bid.checked_add(Decimal::from_int(50 + i)).unwrap();
        rig.fault("touch", &[("symbol", "BTCUSD"), ("bid", &up.to_string())]);
        let (_, ask) = rig.ex.shared().engine.lock().unwrap().touch("BTCUSD").unwrap();
        rig.wait("the stream's touch moved", Duration::from_secs(5), |r| {
            r.symbol("BTCUSD").top.is_some_and(|t| t.ask == ask)
        });
        let id = strategy
            .submit(Intent::Place {
                symbol: "BTCUSD".into(),
                side: Side::Buy,
                price: ask,
                qty: "0.001".parse().unwrap(),
            })
            .unwrap();
        let reply = loop {
            let r = replies.recv_timeout(Duration::from_secs(10)).expect("a reply");
            if r.request == id && r.outcome.is_final() {
                break r;
            }
        };
        assert!(
            matches!(&reply.outcome, Outcome::Refused { rule, .. } if rule.contains("cross")),
            "a buy at the stream's ask is refused here, not sent: {:?}",
            reply.outcome
        );
    }
    let errors = rig.ex.report()["errors"].as_array().unwrap().iter().filter(|e| e["code"] == -2010).count();
    assert_eq!(errors, 0, "no order reached the exchange as a taker");
    assert_eq!(rig.daemon.market().unwrap().state().rest_quotes, quotes, "no REST quote while orders were checked");
    assert_eq!(rig.requests(BOOK_TICKER), polls);
}

/// BTCUSD's tick on the paper exchange (`SymbolSpec::btcusd`).
const BTC_TICK: &str = "0.01";

/// grid-maker on the paper exchange's stream: its orders sit `spacing` ticks behind the
/// stream's touch, and when the market moves it lays them again around the new touch. The
/// plugin's tick is an hour (its one tick is at start), so only `on_book` can explain a
/// re-quote. Each move is exactly `spacing` ticks, the least that re-quotes: the old grid's
/// nearest order then sits at the new touch, neither crossed nor inside the spread.
#[test]
fn grid_maker_quotes_around_the_streams_touch_and_requotes_on_a_move_without_a_tick() {
    use crate::plugins::{build_plugin, wait_until, Rig as PluginRig};
    let so = build_plugin("grid-maker", "1");
    let conf = "levels = 2\nspacing = 5\nquote = 25\nsymbols = BTCUSD\n";
    let mut rig = PluginRig::start_with("market-grid", &[("grid_maker", &so, conf)], |c| {
        c.plugin_tick = Duration::from_secs(3600);
        c.strategy_limits.max_orders_10s = 100;
    });
    rig.ex.fault("quiesce", &[]).unwrap();
    let daemon = rig.daemon.as_ref().unwrap();
    let (link, market) = (daemon.executor().clone(), daemon.market().expect("market stream on").clone());
    let tick: Decimal = BTC_TICK.parse().unwrap();
    let ticks = |n: i64| tick.checked_mul(Decimal::from_int(n)).unwrap();
    // The grid grid-maker should have around a touch: (side, price), sorted.
    let grid_around = |bid: Decimal, ask: Decimal| {
        let mut g = Vec::new();
        for k in 1..=2 {
            g.push((Side::Buy.as_str(), bid.checked_sub(ticks(5 * k)).unwrap()));
            g.push((Side::Sell.as_str(), ask.checked_add(ticks(5 * k)).unwrap()));
        }
        g.sort();
        g
    };
    let grid_now = || {
        let mut g: Vec<(&str, Decimal)> = link
            .view()
            .open_orders
            .iter()
            .filter(|o| o.symbol == "BTCUSD" && o.client_order_id.starts_with("sd-gridmake-"))
            .map(|o| (o.side.as_str(), o.price))
            .collect();
        g.sort();
        g
    };
    let stream_touch = || market.state().symbols.get("BTCUSD").and_then(|m| m.top).map(|t| (t.bid, t.ask));
    let paper_touch = || rig.ex.shared().engine.lock().unwrap().touch("BTCUSD").unwrap();

    let (bid, ask) = paper_touch();
    wait_until("the stream's touch", Duration::from_secs(15), || stream_touch() == Some((bid, ask)));
    wait_until("the grid around the stream's touch", Duration::from_secs(20), || grid_now() == grid_around(bid, ask));
    let books = rig.status("grid_maker").books;
    for (i, moved) in [5, -5, 5].into_iter().enumerate() {
        let placed = link.view().stats.placed;
        let to = paper_touch().0.checked_add(ticks(moved)).unwrap();
        rig.ex.fault("touch", &[("symbol", "BTCUSD"), ("bid", &to.to_string())]).unwrap();
        let (bid, ask) = paper_touch();
        wait_until(&format!("move {i}: the stream's new touch"), Duration::from_secs(10), || {
            stream_touch() == Some((bid, ask))
        });
        wait_until(&format!("move {i}: the grid laid again around {bid}/{ask}"), Duration::from_secs(10), || {
            grid_now() == grid_around(bid, ask)
        });
        assert!(link.view().stats.placed >= placed + 4, "move {i}: four new orders");
    }
    let status = rig.status("grid_maker");
    assert!(status.books > books, "the re-quotes followed books: {status:?}");
    let report = rig.ex.report();
    let rejected = crate::plugins::order_errors(&report);
    assert!(rejected.is_empty(), "the exchange rejected grid orders: {rejected:?}");
    let stats = link.view().stats;
    assert_eq!((stats.filter_rejections, stats.taker_rejections, stats.rejected), (0, 0, 0), "{stats:?}");
    let taken = report["trades"].as_array().unwrap().iter().filter(|t| t["maker"] == false).count();
    assert_eq!(taken, 0, "no grid order took liquidity");
    if let Some(d) = rig.daemon.take() {
        d.stop(Duration::from_secs(8));
    }
}

/// `check`'s market row: the combined stream the daemon would open, connected and read to its
/// first frame; a refused stream is a warning with the reason (the daemon runs without it).
#[test]
fn check_reports_the_market_streams_reachability() {
    use crate::ops::{check, row};
    init_log();
    let ex = paper_with(|c| c.market_tick = Duration::from_millis(50));
    let dir = temp_dir("market-check");
    let (status, text) = check(&ex, &dir, &[]);
    println!("{text}");
    assert!(status.success(), "{text}");
    let ok = row(&text, "market stream");
    assert!(
        ok.contains(" ok ") && (ok.contains("first frame (btcusd@") || ok.contains("first frame (ethusd@")),
        "{text}"
    );
    assert!(ok.contains("6 streams"), "{text}");

    ex.fault("market_refuse", &[("ms", "60000")]).unwrap();
    let (status, text) = check(&ex, &dir, &[]);
    assert!(status.success(), "a market outage is not fatal to run: {text}");
    let refused = row(&text, "market stream");
    assert!(refused.contains("warn") && refused.contains("failed") && refused.contains("cannot connect"), "{text}");
    ex.fault("market_refuse", &[("ms", "0")]).unwrap();

    let (_, text) = check(&ex, &dir, &[("SYNCD_MARKET_STREAM", "false")]);
    assert!(row(&text, "market stream").contains("off"), "{text}");
}

/// The demo's status line shows the books' age once the market stream has them: `book N ms`.
#[test]
fn the_demos_status_line_shows_the_books_age() {
    let dir = temp_dir("market-demo-status");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_binance-syncd"))
        .args(["demo", "--seconds", "8", "--dir"])
        .arg(dir.join("demo"))
        .output()
        .expect("run demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let ages: Vec<u64> = stdout
        .lines()
        .filter(|l| l.starts_with("status: "))
        .filter_map(|l| l.split(" | ").find_map(|f| f.strip_prefix("book ")?.strip_suffix(" ms")?.parse().ok()))
        .collect();
    assert!(!ages.is_empty(), "no status line with the books' age:\n{stdout}");
}
