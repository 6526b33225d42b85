#!/usr/bin/env python3
"""The Python SDK (plugins/python/binance_syncd.py) and its grid example, without a daemon.

Each test writes a small strategy, runs it as the daemon would (a child process with one end of
a socket pair as its stdin and stdout, stderr captured) and plays the daemon's side of the
protocol frame by frame: the handshake, calls, answers to intents and rules, the end of the
stream. Run by tests/it/python.rs (`python3 tests/py/test_sdk.py`); standard library only.
"""

import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import textwrap
import unittest
from decimal import Decimal

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SDK_DIR = os.path.join(ROOT, "plugins", "python")
GRID = os.path.join(SDK_DIR, "examples", "grid.py")
sys.path.insert(0, SDK_DIR)

import binance_syncd as sdk  # noqa: E402

# A guard against a hung child, not a measurement: every wait here ends on a frame, an end of
# stream or the child's exit long before.
GUARD_S = 30

FILL = {
    "c": "fill",
    "seq": 42,
    "trade_id": 7,
    "order_id": 9,
    "time_ms": 1700000000000,
    "symbol": "BTCUSD",
    "client_order_id": "sd-grid-1",
    "price": "100.10",
    "qty": "0.00020",
    "quote_qty": "0.020020",
    "commission": "0.00000001",
    "commission_asset": "BTC",
    "side": 0,
    "maker": True,
    "replayed": False,
    "own": True,
}


def update(**fields):
    u = {
        "c": "order",
        "request": 5,
        "order_id": 0,
        "code": 0,
        "symbol": "BTCUSD",
        "client_order_id": "sd-grid-5",
        "price": "",
        "qty": "",
        "status": "",
        "reason": "",
        "kind": 0,
        "side": 0,
        "resolved": False,
        "reason_code": 0,
    }
    u.update(fields)
    return u


def book(bid, ask, update_id=1):
    return {
        "c": "book",
        "symbol": "BTCUSD",
        "update_id": update_id,
        "event_time_ms": 1,
        "received_ms": 2,
        "skipped": 0,
        "bids": [[bid, "1.5"], ["1.00", "2"]],
        "asks": [[ask, "0.00000001"]],
    }


def start(settings="", snapshot=None):
    return {"c": "start", "name": "t", "settings": settings, "snapshot": json.dumps(snapshot or {})}


class Daemon:
    """The daemon's end of one plugin process."""

    def __init__(self, test, source=None, path=None):
        self.test = test
        if path is None:
            fd, path = tempfile.mkstemp(suffix=".py", prefix="strategy_")
            with os.fdopen(fd, "w") as f:
                f.write(textwrap.dedent(source))
            test.addCleanup(os.unlink, path)
        ours, theirs = socket.socketpair()
        env = dict(os.environ, PYTHONPATH=SDK_DIR, PYTHONDONTWRITEBYTECODE="1")
        self.proc = subprocess.Popen(
            [sys.executable, path], stdin=theirs, stdout=theirs, stderr=subprocess.PIPE, env=env
        )
        theirs.close()
        ours.settimeout(GUARD_S)
        self.sock = ours
        self.stderr = None
        self.requests = 0  # request ids given so far: 1, 2, ...
        test.addCleanup(self.cleanup)

    def cleanup(self):
        self.sock.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()

    def send(self, msg):
        body = json.dumps(msg).encode()
        self.sock.sendall(struct.pack(">I", len(body)) + body)

    def recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf

    def recv(self):
        """The next frame, or None at the end of the stream."""
        head = self.recv_exact(4)
        if head is None:
            return None
        (n,) = struct.unpack(">I", head)
        self.test.assertLessEqual(n, sdk.MAX_UP, "a frame over the daemon's bound")
        body = self.recv_exact(n)
        self.test.assertIsNotNone(body, "the stream ended inside a frame")
        return json.loads(body.decode("utf-8"))

    def hello(self, proto=1):
        self.send({"t": "hello", "proto": proto, "name": "t"})
        return self.recv()

    def call(self, call, answer=None):
        """Sends `call`, answers each intent with `answer(intent)` ({"request", "status"}) and
        each rules_of; returns every frame the plugin sent, the closing `done` last (or None
        last when the stream ended instead)."""
        self.send({"t": "call", "call": call})
        frames = []
        while True:
            msg = self.recv()
            frames.append(msg)
            if msg is None or msg["t"] == "done":
                return frames
            if msg["t"] == "intent":
                self.requests += 1
                a = answer(msg) if answer else {"request": self.requests, "status": 0}
                self.send(dict({"t": "submitted"}, **a))
            elif msg["t"] == "rules_of":
                rules = {"symbol": msg["symbol"], "weight": 1.25, "filters": [{"tickSize": "0.01"}]}
                self.send({"t": "rules", "json": json.dumps(rules) if msg["symbol"] == "BTCUSD" else None})

    def started(self, settings="", snapshot=None):
        ready = self.hello()
        self.test.assertEqual(ready["t"], "ready", ready)
        frames = self.call(start(settings, snapshot))
        self.test.assertEqual(frames[-1], {"t": "done", "status": 0, "seq": 0}, frames)
        return ready, frames

    def wait(self):
        """Closes the daemon's end and returns the exit status and stderr."""
        self.sock.close()
        _, err = self.proc.communicate(timeout=GUARD_S)
        self.stderr = err.decode("utf-8", "replace")
        return self.proc.returncode, self.stderr


def logs(frames):
    return [f["msg"] for f in frames if f and f["t"] == "log"]


RECORDER = """
    import sys
    from decimal import Decimal
    from binance_syncd import Strategy, Side, Refused, FrameTooLarge, Disable, run

    print("module-level garbage on stdout")

    class Recorder(Strategy):
        VERSION = "rec-1"

        def on_start(self, info):
            print("a stray print inside a callback")
            sys.stdout.write("and a write\\n")
            import os
            os.write(1, b"and a raw write to descriptor 1\\n")
            self.log.info("levels=%r missing=%r" % (self.setting("levels"), self.setting("nope", "dflt")))

        def on_book(self, book):
            self.log.info("book %s %r %r" % (book.symbol, book.touch(), book.bids[1]))

        def on_fill(self, fill):
            self.log.info("before %d %s %s %s %s" % (fill.seq, type(fill.price).__name__, fill.price,
                                                     fill.side.name, fill.own))
            if fill.replayed:
                raise ValueError("boom on fill %d" % fill.seq)
            request = self.place(fill.symbol, Side.SELL, fill.price + Decimal("0.10"), Decimal("1E-8"))
            self.log.info("after request %d" % request)

        def on_order(self, u):
            self.log.info("order %s %s %s %r" % (u.kind.name, u.reason_code.name, u.side.name, u.price))

        def on_tick(self, now_ms):
            what = now_ms % 10
            try:
                if what == 1:
                    self.place("BTCUSD", Side.BUY, 0.1, "1")
                elif what == 2:
                    self.place("X" * (2 << 20), Side.BUY, "1", "1")
                elif what == 3:
                    rules = self.rules("BTCUSD")
                    self.log.info("rules %r %r / %r" % (rules["filters"][0]["tickSize"], rules["weight"],
                                                        self.rules("NOPE")))
                elif what == 4:
                    ids = [self.cancel("BTCUSD", order_id=77), self.cancel("BTCUSD", client_order_id="sd-t-9"),
                           self.cancel_all("ETHUSD"),
                           self.replace("BTCUSD", Side.SELL, "100.5", 2, client_order_id="sd-t-8")]
                    self.log.info("ids %r" % ids)
                elif what == 5:
                    raise Disable("settings make no sense")
                elif what == 6:
                    self.place("BTCUSD", Side.BUY, "1", "1")
                elif what == 7:
                    try:
                        self.place("BTCUSD", Side.BUY, "1", "1")
                    except Exception as e:
                        self.log.info("swallowed %r" % e)
            except Refused as e:
                self.log.info("refused %d %s busy=%s" % (e.status, e.reason.name, e.busy))
            except (TypeError, FrameTooLarge) as e:
                self.log.info("not sent: %s: %s" % (type(e).__name__, e))

        def on_stop(self):
            self.log.info("stopping")

    run(Recorder)
"""


class Handshake(unittest.TestCase):
    def test_ready_names_version_abi_and_what_it_wants(self):
        d = Daemon(self, RECORDER)
        ready = d.hello()
        self.assertEqual(
            ready, {"t": "ready", "proto": 1, "version": "rec-1", "abi_minor": 5, "books": True, "trades": False}
        )

    def test_another_protocol_is_refused_with_a_reason(self):
        d = Daemon(self, RECORDER)
        refused = d.hello(proto=2)
        self.assertEqual(refused["t"], "refused")
        self.assertIn("protocol 2", refused["why"])
        code, _ = d.wait()
        self.assertEqual(code, 4)

    def test_stray_prints_reach_stderr_not_the_channel(self):
        d = Daemon(self, RECORDER)
        _, frames = d.started("levels = 4 # comment\n")
        self.assertEqual(logs(frames), ["levels='4' missing='dflt'"])
        self.assertEqual(d.call({"c": "stop"})[-1], {"t": "done", "status": 0, "seq": 0})
        code, err = d.wait()
        self.assertEqual(code, 0, err)
        for line in ("module-level garbage", "a stray print inside", "and a write", "and a raw write"):
            self.assertIn(line, err)


class Calls(unittest.TestCase):
    def test_a_fill_is_acknowledged_with_its_seq_only_after_on_fill_returned(self):
        d = Daemon(self, RECORDER)
        d.started()
        frames = d.call(FILL, answer=lambda i: {"request": 31, "status": 0})
        kinds = [f["t"] for f in frames]
        # The intent reached the daemon and was answered before the callback went on; its
        # last log came before the acknowledgement.
        self.assertEqual(kinds, ["log", "intent", "log", "done"], frames)
        self.assertEqual(logs(frames), ["before 42 Decimal 100.10 BUY True", "after request 31"])
        intent = frames[1]
        self.assertEqual(
            intent,
            {
                "t": "intent",
                "kind": 0,
                "side": 1,
                "order_id": 0,
                "symbol": "BTCUSD",
                "price": "100.20",
                "qty": "0.00000001",
                "client_order_id": "",
            },
        )
        self.assertEqual(frames[-1], {"t": "done", "status": 0, "seq": 42})

    def test_every_intent_kind_and_rules_are_answered(self):
        d = Daemon(self, RECORDER)
        d.started()
        frames = d.call({"c": "tick", "now_ms": 4})
        intents = [f for f in frames if f["t"] == "intent"]
        self.assertEqual([(i["kind"], i["order_id"], i["client_order_id"], i["symbol"]) for i in intents], [
            (1, 77, "", "BTCUSD"), (1, 0, "sd-t-9", "BTCUSD"), (2, 0, "", "ETHUSD"), (3, 0, "sd-t-8", "BTCUSD")])
        self.assertEqual((intents[3]["side"], intents[3]["price"], intents[3]["qty"]), (1, "100.5", "2"))
        self.assertEqual(logs(frames), ["ids [1, 2, 3, 4]"])
        frames = d.call({"c": "tick", "now_ms": 3})
        self.assertEqual(logs(frames), ["rules '0.01' Decimal('1.25') / None"], "a number in JSON is a Decimal")
        self.assertEqual(frames[-1], {"t": "done", "status": 0, "seq": 0})

    def test_busy_and_refused_are_typed_refusals(self):
        d = Daemon(self, RECORDER)
        d.started()
        frames = d.call({"c": "tick", "now_ms": 6}, answer=lambda i: {"request": 0, "status": -4})
        self.assertEqual(logs(frames), ["refused -4 BUSY busy=True"])
        frames = d.call({"c": "tick", "now_ms": 6}, answer=lambda i: {"request": 0, "status": -3})
        self.assertEqual(logs(frames), ["refused -3 OTHER busy=False"])

    def test_a_float_price_is_refused_before_anything_is_sent(self):
        d = Daemon(self, RECORDER)
        d.started()
        frames = d.call({"c": "tick", "now_ms": 1})
        self.assertEqual([f["t"] for f in frames], ["log", "done"], frames)
        self.assertTrue(logs(frames)[0].startswith("not sent: TypeError: price must be a decimal.Decimal"))

    def test_a_frame_over_the_bound_is_not_written(self):
        d = Daemon(self, RECORDER)
        d.started()
        frames = d.call({"c": "tick", "now_ms": 2})
        self.assertEqual([f["t"] for f in frames], ["log", "done"], frames)
        self.assertTrue(logs(frames)[0].startswith("not sent: FrameTooLarge: a frame of "), frames)

    def test_updates_books_and_unknown_codes_are_typed(self):
        d = Daemon(self, RECORDER)
        d.started()
        frames = d.call(update(kind=3, reason_code=7, side=1, price="1.50"))
        self.assertEqual(logs(frames), ["order REFUSED ORDER_RATE SELL Decimal('1.50')"])
        # A newer daemon's kind and reason: the safe readings.
        frames = d.call(update(kind=200, reason_code=200))
        self.assertEqual(logs(frames), ["order UNRESOLVED OTHER BUY None"])
        frames = d.call(book("100.00", "100.10"))
        self.assertEqual(
            logs(frames), ["book BTCUSD (Decimal('100.00'), Decimal('100.10')) (Decimal('1.00'), Decimal('2'))"]
        )
        # A call this SDK does not know is answered, with no callback.
        self.assertEqual(d.call({"c": "newfangled", "x": 1}), [{"t": "done", "status": 0, "seq": 0}])

    def test_disable_answers_error_and_logs_why(self):
        d = Daemon(self, RECORDER)
        d.started()
        frames = d.call({"c": "tick", "now_ms": 5})
        self.assertEqual(frames[0], {"t": "log", "level": 1, "msg": "settings make no sense"})
        self.assertEqual(frames[-1], {"t": "done", "status": -2, "seq": 0})


class Endings(unittest.TestCase):
    def test_the_end_of_the_stream_exits_0(self):
        d = Daemon(self, RECORDER)
        d.started()
        code, err = d.wait()
        self.assertEqual(code, 0, err)
        self.assertNotIn("Traceback", err)

    def test_an_exception_in_a_callback_is_a_crash_with_its_traceback_and_no_acknowledgement(self):
        d = Daemon(self, RECORDER)
        d.started()
        frames = d.call(dict(FILL, replayed=True))
        self.assertEqual([f and f["t"] for f in frames], ["log", None], "no done: the fill is not acknowledged")
        code, err = d.wait()
        self.assertNotEqual(code, 0)
        self.assertIn("Traceback (most recent call last)", err)
        self.assertIn("ValueError: boom on fill 42", err)

    def test_a_frame_over_the_daemons_bound_ends_it_as_a_protocol_error(self):
        d = Daemon(self, RECORDER)
        d.started()
        d.sock.sendall(struct.pack(">I", sdk.MAX_DOWN + 1))
        code, err = d.wait()
        self.assertEqual(code, 4, err)
        self.assertIn("over the", err)

    def test_an_answer_out_of_step_ends_it_even_under_except_exception(self):
        d = Daemon(self, RECORDER)
        d.started()
        d.send({"t": "call", "call": {"c": "tick", "now_ms": 7}})
        self.assertEqual(d.recv()["t"], "intent")
        d.send({"t": "rules", "json": None})
        self.assertIsNone(d.recv(), "no log of a swallowed error, no done")
        code, err = d.wait()
        self.assertEqual(code, 4, err)
        self.assertIn("answered by 'rules'", err)

    def test_a_malformed_frame_is_a_protocol_error(self):
        d = Daemon(self, RECORDER)
        d.started()
        d.sock.sendall(struct.pack(">I", 5) + b'{"t":')
        code, err = d.wait()
        self.assertEqual(code, 4, err)
        self.assertIn("malformed", err)

    def test_not_started_by_the_daemon_says_so(self):
        # No channel: stdin a terminal is what a person running it by hand has; a closed
        # stdin (no descriptor 0) stands for it here.
        fd, path = tempfile.mkstemp(suffix=".py")
        with os.fdopen(fd, "w") as f:
            f.write("import binance_syncd\nbinance_syncd.run(binance_syncd.Strategy)\n")
        self.addCleanup(os.unlink, path)
        env = dict(os.environ, PYTHONPATH=SDK_DIR)
        p = subprocess.run(
            [sys.executable, path], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=env, timeout=GUARD_S, close_fds=True, preexec_fn=lambda: os.close(0),
        )
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn(b"the daemon runs it", p.stderr)


class JournalOfFills(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.path = os.path.join(self.dir.name, "journal.fills")

    def tearDown(self):
        self.dir.cleanup()

    def fill(self, symbol, trade_id):
        return sdk._fill(dict(FILL, symbol=symbol, trade_id=trade_id))

    def test_a_fill_added_is_known_after_a_restart_by_symbol_and_trade_id(self):
        j = sdk.Journal(self.path)
        self.assertNotIn(self.fill("BTCUSD", 7), j)
        j.add(self.fill("BTCUSD", 7))
        j.add(("ETHUSD", 8))
        j.add(("ETHUSD", 8))  # once only
        j.close()
        again = sdk.Journal(self.path)
        self.assertIn(self.fill("BTCUSD", 7), again)
        self.assertIn(("ETHUSD", 8), again)
        # A trade id is unique within its symbol only.
        self.assertNotIn(self.fill("ETHUSD", 7), again)
        self.assertEqual(len(again), 2)
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), b"BTCUSD 7\nETHUSD 8\n")

    def test_a_line_torn_by_a_crash_is_ignored_and_the_rest_kept(self):
        with open(self.path, "wb") as f:
            f.write(b"BTCUSD 1\ngarbage\nBTCUSD 2\nBTCUSD 3")
        j = sdk.Journal(self.path)
        self.assertIn(("BTCUSD", 1), j)
        self.assertIn(("BTCUSD", 2), j)
        self.assertNotIn(("BTCUSD", 3), j)
        j.add(("BTCUSD", 4))
        j.close()
        self.assertIn(("BTCUSD", 4), sdk.Journal(self.path))

    def test_only_the_newest_keys_are_kept_and_the_file_stays_bounded(self):
        j = sdk.Journal(self.path, keep=3)
        for t in range(1, 21):
            j.add(("BTCUSD", t))
        self.assertEqual(len(j), 3)
        self.assertNotIn(("BTCUSD", 17), j)
        self.assertIn(("BTCUSD", 18), j)
        j.close()
        with open(self.path, "rb") as f:
            lines = f.read().splitlines()
        self.assertLessEqual(len(lines), 6, lines)
        self.assertEqual(lines[-1], b"BTCUSD 20")
        again = sdk.Journal(self.path, keep=3)
        self.assertEqual([("BTCUSD", t) in again for t in (17, 18, 19, 20)], [False, True, True, True])
        self.assertFalse(os.path.exists(self.path + ".tmp"))

    def test_bad_keys_are_refused(self):
        j = sdk.Journal(self.path)
        for bad in [("", 1), ("BTC USD", 1), ("BTCUSD", -1), ("BTCUSD", True), ("BTCUSD", "1")]:
            with self.assertRaises(ValueError, msg=repr(bad)):
                j.add(bad)
        with self.assertRaises(ValueError):
            sdk.Journal(self.path, keep=0)


class Settings(unittest.TestCase):
    def test_setting_reads_the_first_uncommented_line_of_the_key_trimmed_as_the_rust_sdk(self):
        # The Rust SDK's own cases (plugins/sdk/src/lib.rs).
        conf = "# spread = 9\n  spread =  0.25 # ticks\nlevels=3\nspread = 7\nempty =\nnoequals\n"
        self.assertEqual(sdk.setting(conf, "spread"), "0.25")
        self.assertEqual(sdk.setting(conf, "levels"), "3")
        self.assertEqual(sdk.setting(conf, "empty"), "")
        self.assertIsNone(sdk.setting(conf, "noequals"))
        self.assertIsNone(sdk.setting(conf, "missing"))
        self.assertEqual(sdk.setting("url = a=b", "url"), "a=b")
        # Rust's lines() and trim(): CRLF ends a line; U+001F is not whitespace there.
        self.assertEqual(sdk.setting("a = 1\r\nb = 2\r\n", "a"), "1")
        self.assertEqual(sdk.setting("a = \x1f1", "a"), "\x1f1")
        self.assertIsNone(sdk.setting("a\x0b= 1\x0bb = 2", "b"))

    def test_wire_decimals_are_exact_and_plain(self):
        self.assertEqual(sdk._wire_decimal("p", Decimal("1E-8")), "0.00000001")
        self.assertEqual(sdk._wire_decimal("p", 3), "3")
        self.assertEqual(sdk._wire_decimal("p", " 1.50 "), "1.50")
        for bad in (0.1, True, None, [1]):
            self.assertRaises(TypeError, sdk._wire_decimal, "p", bad)
        for bad in ("abc", Decimal("NaN"), "Infinity"):
            self.assertRaises(ValueError, sdk._wire_decimal, "p", bad)

    def test_every_reason_of_the_header_has_its_member(self):
        with open(os.path.join(ROOT, "plugins", "include", "binance_syncd_plugin.h")) as f:
            header = f.read()
        for prefix, enum in (("SYNCD_REASON_", sdk.Reason), ("SYNCD_UPDATE_", sdk.UpdateKind),
                             ("SYNCD_STATUS_", sdk.Status), ("SYNCD_INTENT_", sdk.IntentKind),
                             ("SYNCD_SIDE_", sdk.Side), ("SYNCD_LOG_", sdk.LogLevel)):
            defines = {}
            for line in header.splitlines():
                parts = line.split()
                if len(parts) == 3 and parts[0] == "#define" and parts[1].startswith(prefix):
                    defines[parts[1][len(prefix):]] = int(parts[2].strip("()"))
            self.assertTrue(defines, prefix)
            self.assertEqual({m.name: int(m) for m in enum}, defines, prefix)
        self.assertIn("#define SYNCD_ABI_MINOR %d" % sdk.ABI_MINOR, header)


SNAPSHOT = {
    "tag": "grid",
    "symbols": {
        "BTCUSD": {
            "symbol": "BTCUSD",
            "filters": [
                {"filterType": "PRICE_FILTER", "tickSize": "0.01000000"},
                {"filterType": "LOT_SIZE", "stepSize": "0.00001000"},
            ],
        },
        "NOGRID": {"symbol": "NOGRID", "filters": []},
    },
}


class GridExample(unittest.TestCase):
    def grid(self):
        d = Daemon(self, path=GRID)
        ready, frames = d.started("levels = 2\nspacing = 10\nquote = 20\n", SNAPSHOT)
        self.assertTrue(ready["books"], "the grid follows books")
        self.assertIn("NOGRID: no tick or step", " ".join(logs(frames)))
        return d

    def places(self, frames):
        return [(i["side"], i["price"], i["qty"]) for i in frames if i and i["t"] == "intent" and i["kind"] == 0]

    def test_lays_a_maker_grid_around_the_touch_and_lays_it_again_when_the_touch_moves(self):
        d = self.grid()
        frames = d.call(book("100.00", "100.10"))
        # 20 / price, truncated to the step's 5 significant decimals; prices a grid step apart,
        # each inside its own side of the book (maker only).
        self.assertEqual(self.places(frames), [
            (0, "99.90", "0.20020"), (1, "100.20", "0.19960"), (0, "99.80", "0.20040"), (1, "100.30", "0.19940")])
        # Less than a grid step: nothing. A step: cancel_all, then the grid again.
        self.assertEqual(self.places(d.call(book("100.05", "100.15", 2))), [])
        frames = d.call(book("100.10", "100.20", 3))
        self.assertEqual([f["kind"] for f in frames if f["t"] == "intent"], [2, 0, 0, 0, 0])
        self.assertEqual(self.places(frames)[0], (0, "100.00", "0.20000"))

    def test_quotes_the_other_side_of_its_own_fill_never_through_the_touch(self):
        d = self.grid()
        d.call(book("100.00", "100.10"))
        frames = d.call(dict(FILL, client_order_id="sd-grid-1", price="99.90", side=0))
        self.assertEqual(self.places(frames), [(1, "100.10", "0.19980")], "at the ask, not 100.00 inside it")
        self.assertEqual(frames[-1], {"t": "done", "status": 0, "seq": 42})
        # Another tag's, another client's, or a replayed fill: nothing.
        for other in ({"client_order_id": "sd-other-1"}, {"own": False}, {"replayed": True}):
            self.assertEqual(self.places(d.call(dict(FILL, **other))), [], other)

    def test_retries_a_refusal_for_pace_by_its_code_and_nothing_else(self):
        d = self.grid()
        frames = d.call(book("100.00", "100.10"))
        self.assertEqual(len(self.places(frames)), 4)
        # Requests 1 and 2: the first buy and sell. Words in status and reason do not count.
        d.call(update(request=1, kind=3, reason_code=7, status="ORDER_RATE", reason="words do not matter"))
        d.call(update(request=2, kind=4, reason_code=4, status="CROSSES_BOOK", reason="order rate"))
        frames = d.call({"c": "tick", "now_ms": 1})
        self.assertEqual(self.places(frames), [(0, "99.90", "0.20020")], "the pace refusal, once")
        self.assertEqual(self.places(d.call({"c": "tick", "now_ms": 2})), [], "not the crossing one")

    def test_over_its_pace_it_sends_one_probe_a_tick_and_lays_no_grid_until_one_is_taken(self):
        d = self.grid()
        self.assertEqual(len(self.places(d.call(book("100.00", "100.10")))), 4)
        d.call(update(request=3, kind=3, reason_code=7, status="ORDER_RATE"))
        d.call(update(request=4, kind=3, reason_code=7, status="ORDER_RATE"))
        # The touch moves a grid step: no cancel_all and no orders while over its pace.
        self.assertEqual([f for f in d.call(book("100.10", "100.20", 2)) if f["t"] == "intent"], [])
        # A tick: the grid laid again around the new touch, but only its first order is sent
        # (the probe); the others wait. Nothing while the probe is in flight.
        frames = d.call({"c": "tick", "now_ms": 1})
        self.assertEqual([f["kind"] for f in frames if f["t"] == "intent"], [2, 0])
        self.assertEqual(self.places(frames), [(0, "100.00", "0.20000")])
        self.assertEqual([f for f in d.call({"c": "tick", "now_ms": 2}) if f["t"] == "intent"], [])
        # Refused for pace again: the next tick probes again, with one quote that waited.
        d.call(update(request=6, kind=3, reason_code=7, status="ORDER_RATE"))
        self.assertEqual(len(self.places(d.call({"c": "tick", "now_ms": 3}))), 1)
        # Taken: the pace is back, the next tick sends the rest of the grid.
        d.call(update(request=7, kind=0, status="NEW"))
        frames = d.call({"c": "tick", "now_ms": 4})
        self.assertEqual(sorted(self.places(frames)),
                         [(0, "99.90", "0.20020"), (1, "100.30", "0.19940"), (1, "100.40", "0.19920")])

    def test_a_busy_daemon_is_tried_again_on_a_tick(self):
        d = self.grid()
        frames = d.call(book("100.00", "100.10"), answer=lambda i: {"request": 0, "status": -4})
        self.assertEqual(len(self.places(frames)), 4)
        self.assertEqual(frames[-1]["status"], 0, "a refusal is no crash")
        self.assertEqual(len(self.places(d.call({"c": "tick", "now_ms": 1}))), 1)

    def test_the_sources_parse_as_python_3_9(self):
        import ast

        for path in (os.path.join(SDK_DIR, "binance_syncd.py"), GRID, __file__):
            with open(path) as f:
                ast.parse(f.read(), filename=path, feature_version=(3, 9))

    def test_the_example_is_executable_with_a_python_shebang(self):
        with open(GRID) as f:
            self.assertEqual(f.readline().strip(), "#!/usr/bin/env python3")
        self.assertTrue(os.access(GRID, os.X_OK), "mode 0755")


if __name__ == "__main__":
    unittest.main()
