#!/usr/bin/env python3
"""Conformance test: independent Binance clients from PyPI, unchanged, against the paper exchange.

    python tests/py/clients.py <path/to/binance-syncd> [--tls] [--only GROUP ...] [--skip GROUP ...]

Groups: pybinance (python-binance), connector (binance-connector), ccxt (ccxt binanceus),
ws (websocket-client on /ws/<listenKey>), report (the ground-truth report at the end).

It starts `binance-syncd paper --time-scale 10`, reads its URLs and key pair from stdout, runs
each group, prints one line per check (PASS/FAIL), stops the server with SIGTERM (checking it
exits 0) and exits 1 if any check failed. Only base URLs are overridden in the clients, as
documented in each client's source; nothing else is patched.

With --tls the server runs `paper --tls` (https:// and wss://) and every client trusts the
certificate it prints (SYNCD_CA_FILE) as its CA bundle, the way each documents: requests-based
clients through REQUESTS_CA_BUNDLE, websocket-client through sslopt, urllib through an SSL context.
"""

import argparse
import hashlib
import hmac
import json
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import urllib.request
from decimal import Decimal

SYMBOL = "BTCUSD"
CCXT_SYMBOL = "BTC/USD"
TICK = Decimal("0.01")
STEP = Decimal("0.00001")
QTY = "0.00100"  # 0.001 BTC, a multiple of the step, ~60 USD at the seeded price
GROUPS = ["pybinance", "connector", "ccxt", "ws", "report"]
TIME_SCALE = 10
# The documented field set of an executionReport (Binance.US API docs, "Order Update" sample).
EXEC_REPORT_KEYS = set("e E s c S o f q p P F g C x X r i l z L n N T t I w m M O Z Y Q W V".split())

RESULTS = []  # (ok, name, detail)


def check(name, ok, detail=""):
    RESULTS.append((bool(ok), name, detail))
    print(f"{'PASS' if ok else 'FAIL'}  {name}" + (f"  -- {detail}" if detail else ""), flush=True)
    return bool(ok)


def run_check(name, fn):
    """Runs fn(); an exception is a failed check with the exception as detail."""
    try:
        res = fn()
    except Exception as e:  # noqa: BLE001 - every failure is reported, not raised
        tb = traceback.format_exc(limit=3).strip().splitlines()
        return check(name, False, f"{type(e).__name__}: {e} [{tb[-3].strip() if len(tb) >= 3 else ''}]")
    if isinstance(res, tuple):
        return check(name, res[0], res[1])
    return check(name, res is not False)


def dec(x):
    return Decimal(str(x))


def price_str(p):
    return str(dec(p).quantize(TICK))


# ---------------------------------------------------------------------------------------------
# The paper exchange process and its control endpoint


def die_with_parent():
    """In the child before exec: on Linux, SIGTERM the paper exchange if this script dies."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Paper:
    def __init__(self, binary, tls=False):
        self.log = tempfile.TemporaryFile(mode="w+")
        self.tls_dir = tempfile.TemporaryDirectory() if tls else None
        extra = ["--tls", "--tls-dir", self.tls_dir.name] if tls else []
        self.proc = subprocess.Popen(
            [binary, "paper", "--time-scale", str(TIME_SCALE)] + extra,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            preexec_fn=die_with_parent,
        )
        self.env = {}
        lines = []
        done = threading.Event()

        def read():
            for line in self.proc.stdout:
                lines.append(line)
                k, _, v = line.strip().partition("=")
                self.env[k] = v
                if len(self.env) >= 4 and all(
                    k in self.env for k in ("SYNCD_REST_URL", "SYNCD_WS_URL", "BINANCE_API_KEY", "BINANCE_API_SECRET")
                ):
                    done.set()
            done.set()  # EOF

        threading.Thread(target=read, daemon=True).start()
        if not done.wait(15) or "BINANCE_API_SECRET" not in self.env:
            self.stop()
            raise RuntimeError(f"paper exchange did not print its URLs and keys; stdout={lines!r}; log={self.stderr()}")
        self.rest = self.env["SYNCD_REST_URL"]
        self.ws = self.env["SYNCD_WS_URL"]
        self.ca = self.env.get("SYNCD_CA_FILE") if tls else None
        if tls and not self.ca:
            self.stop()
            raise RuntimeError(f"paper --tls did not print SYNCD_CA_FILE; stdout={lines!r}")
        # Verifying, with the printed certificate as the only extra root.
        self.ssl = ssl.create_default_context(cafile=self.ca) if self.ca else None
        self.key = self.env["BINANCE_API_KEY"]
        self.secret = self.env["BINANCE_API_SECRET"]

    def stderr(self, tail=4000):
        self.log.seek(0)
        return self.log.read()[-tail:]

    def stop(self):
        """SIGTERM, then the exit status (None if it had to be killed)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    # -- plain HTTP helpers, for control and for the WS part's setup

    def http(self, method, path, query=None, headers=None):
        url = self.rest + path + ("?" + urllib.parse.urlencode(query) if query else "")
        req = urllib.request.Request(url, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=10, context=self.ssl) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def fault(self, name, **params):
        status, body = self.http("POST", "/paper/fault", dict(name=name, **params))
        if status != 200:
            raise RuntimeError(f"fault {name} {params}: HTTP {status} {body}")
        return body

    def report(self):
        status, body = self.http("GET", "/paper/report")
        if status != 200:
            raise RuntimeError(f"report: HTTP {status} {body}")
        return body

    def fill_until_filled(self, order_id, status_of, max_rounds=20):
        """Forces fills of one order until the client's own query says FILLED."""
        for _ in range(max_rounds):
            self.fault("fill", symbol=SYMBOL, order_id=str(order_id))
            st = status_of()
            if st == "FILLED":
                return st
        return st

    def signed(self, method, path, params):
        """A signed request built by hand (for the WS part's order placement)."""
        params = dict(params, timestamp=str(int(time.time() * 1000)))
        q = urllib.parse.urlencode(params)
        sig = hmac.new(self.secret.encode(), q.encode(), hashlib.sha256).hexdigest()
        url = f"{self.rest}{path}?{q}&signature={sig}"
        req = urllib.request.Request(url, method=method, headers={"X-MBX-APIKEY": self.key})
        try:
            with urllib.request.urlopen(req, timeout=10, context=self.ssl) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")


def filters_of(sym_info):
    return {f["filterType"]: f for f in sym_info.get("filters", [])}


def check_symbol_info(prefix, info):
    """The raw exchangeInfo entry of BTCUSD as the client handed it back."""
    f = filters_of(info)
    pf, lot = f.get("PRICE_FILTER", {}), f.get("LOT_SIZE", {})
    ok = (
        info.get("symbol") == SYMBOL
        and info.get("status") == "TRADING"
        and info.get("baseAsset") == "BTC"
        and info.get("quoteAsset") == "USD"
        and "LIMIT_MAKER" in info.get("orderTypes", [])
        and dec(pf.get("tickSize", 0)) == TICK
        and dec(lot.get("stepSize", 0)) == STEP
        and ("MIN_NOTIONAL" in f or "NOTIONAL" in f)
    )
    return ok, (
        f"status={info.get('status')} tickSize={pf.get('tickSize')} stepSize={lot.get('stepSize')} "
        f"orderTypes={info.get('orderTypes')}"
    )


# ---------------------------------------------------------------------------------------------
# python-binance


def run_pybinance(px):
    from binance.client import Client
    from binance.exceptions import BinanceAPIException
    from binance.helpers import round_step_size

    P = "python-binance"

    class PaperClient(Client):  # the documented override: API_URL without {} survives .format()
        API_URL = px.rest + "/api"

    made = []

    def construct():
        made.append(PaperClient(px.key, px.secret, tld="us"))  # ping=True: GET /api/v3/ping

    if not run_check(f"{P}: construct (GET /api/v3/ping in __init__)", construct):
        return
    c = made[0]

    def server_time():
        t = c.get_server_time()["serverTime"]
        return abs(t - time.time() * 1000) < 5000, f"serverTime={t}"

    run_check(f"{P}: get_server_time", server_time)

    def symbol_info():
        info = c.get_symbol_info(SYMBOL)
        if info is None:
            return False, "get_symbol_info returned None"
        ok, detail = check_symbol_info(P, info)
        f = filters_of(info)
        # the client's own helper rounds with the exchange's step
        rounded = round_step_size(0.0012345, float(f["LOT_SIZE"]["stepSize"]))
        return ok and abs(rounded - 0.00123) < 1e-12, f"{detail} round_step_size(0.0012345)={rounded}"

    run_check(f"{P}: get_symbol_info + filters (tickSize 0.01, stepSize 0.00001)", symbol_info)

    def listen_key():
        lk = c.stream_get_listen_key()
        assert isinstance(lk, str) and lk, f"listen key {lk!r}"
        r1 = c.stream_keepalive(lk)
        r2 = c.stream_close(lk)
        # The key is gone: a keepalive on it must fail with -1125 through the client's mapping.
        try:
            c.stream_keepalive(lk)
            return False, "keepalive after close succeeded"
        except BinanceAPIException as e:
            return e.code == -1125, f"keepalive={r1} close={r2} after-close: {e.code} {e.message}"

    run_check(f"{P}: listen key create/keepalive/close (+ -1125 after close)", listen_key)
    px.expected_errors.append(("PUT", "/api/v3/userDataStream", -1125))

    book = {}

    def ticker():
        t = c.get_orderbook_ticker(symbol=SYMBOL)
        book.update(bid=dec(t["bidPrice"]), ask=dec(t["askPrice"]))
        return book["bid"] < book["ask"], f"bid={t['bidPrice']} ask={t['askPrice']}"

    if not run_check(f"{P}: get_orderbook_ticker", ticker):
        return

    order = {}

    def place():
        price = price_str(book["bid"] * Decimal("0.99"))
        r = c.create_order(symbol=SYMBOL, side="BUY", type="LIMIT_MAKER", quantity=QTY, price=price)
        order.update(id=r["orderId"], price=price)
        st = c.get_order(symbol=SYMBOL, orderId=r["orderId"])["status"]
        return st == "NEW", f"orderId={r['orderId']} price={price} status={st}"

    if run_check(f"{P}: create_order LIMIT_MAKER below bid rests (get_order status NEW)", place):

        def fill():
            st = px.fill_until_filled(order["id"], lambda: c.get_order(symbol=SYMBOL, orderId=order["id"])["status"])
            return st == "FILLED", f"status={st}"

        if run_check(f"{P}: forced fill -> get_order status FILLED", fill):

            def trades():
                ts = [t for t in c.get_my_trades(symbol=SYMBOL) if t["orderId"] == order["id"]]
                total = sum(dec(t["qty"]) for t in ts)
                ok = ts and total == dec(QTY) and all(t["isMaker"] is True and t["isBuyer"] is True for t in ts)
                ok = ok and all(dec(t["price"]) == dec(order["price"]) for t in ts)
                return ok, f"{len(ts)} fill(s), sum qty={total}, isMaker={[t['isMaker'] for t in ts]}"

            run_check(f"{P}: get_my_trades has the fill(s): sum qty == {QTY}, isMaker", trades)

    def cancel():
        price = price_str(book["bid"] * Decimal("0.98"))
        r = c.create_order(symbol=SYMBOL, side="BUY", type="LIMIT_MAKER", quantity=QTY, price=price)
        x = c.cancel_order(symbol=SYMBOL, orderId=r["orderId"])
        return x.get("status") == "CANCELED" and x.get("orderId") == r["orderId"], f"cancel -> {x.get('status')}"

    run_check(f"{P}: resting LIMIT_MAKER + cancel_order -> CANCELED", cancel)

    def crossing():
        try:
            r = c.create_order(symbol=SYMBOL, side="BUY", type="LIMIT_MAKER", quantity=QTY, price=price_str(book["ask"]))
            return False, f"accepted: {r}"
        except BinanceAPIException as e:
            return e.code == -2010 and e.status_code == 400, f"BinanceAPIException {e.status_code} {e.code} {e.message!r}"

    run_check(f"{P}: crossing LIMIT_MAKER (at best ask) -> BinanceAPIException -2010", crossing)
    px.expected_errors.append(("POST", "/api/v3/order", -2010))


# ---------------------------------------------------------------------------------------------
# binance-connector


def run_connector(px):
    from binance.error import ClientError
    from binance.spot import Spot

    P = "binance-connector"
    c = Spot(api_key=px.key, api_secret=px.secret, base_url=px.rest)

    def server_time():
        t = c.time()["serverTime"]
        return abs(t - time.time() * 1000) < 5000, f"serverTime={t}"

    run_check(f"{P}: time", server_time)

    def info_one():
        r = c.exchange_info(symbol=SYMBOL)
        syms = r.get("symbols", [])
        if len(syms) != 1:
            return False, f"{len(syms)} symbols for symbol={SYMBOL}"
        return check_symbol_info(P, syms[0])

    run_check(f"{P}: exchange_info(symbol=BTCUSD) filters (tickSize 0.01, stepSize 0.00001)", info_one)

    def info_all():
        r = c.exchange_info()
        names = [s["symbol"] for s in r.get("symbols", [])]
        return SYMBOL in names, f"symbols={names}"

    run_check(f"{P}: exchange_info() lists BTCUSD", info_all)

    def listen_key():
        lk = c.new_listen_key()["listenKey"]
        r1 = c.renew_listen_key(lk)
        r2 = c.close_listen_key(lk)
        try:
            c.renew_listen_key(lk)
            return False, "renew after close succeeded"
        except ClientError as e:
            return e.error_code == -1125, f"renew={r1} close={r2} after-close: {e.status_code} {e.error_code} {e.error_message}"

    run_check(f"{P}: new/renew/close_listen_key (+ -1125 after close)", listen_key)
    px.expected_errors.append(("PUT", "/api/v3/userDataStream", -1125))

    book = {}

    def ticker():
        t = c.book_ticker(symbol=SYMBOL)
        book.update(bid=dec(t["bidPrice"]), ask=dec(t["askPrice"]))
        return book["bid"] < book["ask"], f"bid={t['bidPrice']} ask={t['askPrice']}"

    if not run_check(f"{P}: book_ticker", ticker):
        return

    order = {}

    def place():
        price = price_str(book["bid"] * Decimal("0.99"))
        r = c.new_order(symbol=SYMBOL, side="BUY", type="LIMIT_MAKER", quantity=QTY, price=price)
        order.update(id=r["orderId"], price=price)
        st = c.get_order(SYMBOL, orderId=r["orderId"])["status"]
        return st == "NEW", f"orderId={r['orderId']} price={price} status={st}"

    if run_check(f"{P}: new_order LIMIT_MAKER below bid rests (get_order status NEW)", place):

        def fill():
            st = px.fill_until_filled(order["id"], lambda: c.get_order(SYMBOL, orderId=order["id"])["status"])
            return st == "FILLED", f"status={st}"

        if run_check(f"{P}: forced fill -> get_order status FILLED", fill):

            def trades():
                ts = c.my_trades(SYMBOL, orderId=order["id"])
                ts = [t for t in ts if t["orderId"] == order["id"]]
                total = sum(dec(t["qty"]) for t in ts)
                ok = ts and total == dec(QTY) and all(t["isMaker"] is True and t["isBuyer"] is True for t in ts)
                ok = ok and all(dec(t["price"]) == dec(order["price"]) for t in ts)
                return ok, f"{len(ts)} fill(s), sum qty={total}, isMaker={[t['isMaker'] for t in ts]}"

            run_check(f"{P}: my_trades(orderId=) has the fill(s): sum qty == {QTY}, isMaker", trades)

    def cancel():
        price = price_str(book["bid"] * Decimal("0.98"))
        r = c.new_order(symbol=SYMBOL, side="BUY", type="LIMIT_MAKER", quantity=QTY, price=price)
        x = c.cancel_order(SYMBOL, orderId=r["orderId"])
        return x.get("status") == "CANCELED" and x.get("orderId") == r["orderId"], f"cancel -> {x.get('status')}"

    run_check(f"{P}: resting LIMIT_MAKER + cancel_order -> CANCELED", cancel)

    def crossing():
        try:
            r = c.new_order(symbol=SYMBOL, side="BUY", type="LIMIT_MAKER", quantity=QTY, price=price_str(book["ask"]))
            return False, f"accepted: {r}"
        except ClientError as e:
            return e.error_code == -2010 and e.status_code == 400, f"ClientError {e.status_code} {e.error_code} {e.error_message!r}"

    run_check(f"{P}: crossing LIMIT_MAKER (at best ask) -> ClientError -2010", crossing)
    px.expected_errors.append(("POST", "/api/v3/order", -2010))


# ---------------------------------------------------------------------------------------------
# ccxt binanceus


def run_ccxt(px):
    import ccxt

    P = "ccxt"
    ex = ccxt.binanceus({"apiKey": px.key, "secret": px.secret, "enableRateLimit": True})
    ex.urls["api"]["public"] = px.rest + "/api/v3"
    ex.urls["api"]["private"] = px.rest + "/api/v3"
    for k, v in {"sapi": "/sapi/v1", "sapiV2": "/sapi/v2", "sapiV3": "/sapi/v3", "sapiV4": "/sapi/v4", "v1": "/api/v1"}.items():
        ex.urls["api"][k] = px.rest + v

    def server_time():
        t = ex.fetch_time()
        return abs(t - time.time() * 1000) < 5000, f"fetch_time={t}"

    run_check(f"{P}: fetch_time", server_time)

    def markets():
        ex.load_markets()
        m = ex.market(CCXT_SYMBOL)
        pr, lim = m["precision"], m["limits"]
        ok = (
            m["id"] == SYMBOL
            and m["active"] is True
            and m["spot"] is True
            and dec(pr["price"]) == TICK
            and dec(pr["amount"]) == STEP
            and dec(lim["price"]["min"]) == TICK
            and dec(lim["amount"]["min"]) == STEP
            and lim["cost"]["min"] is not None
            and ex.price_to_precision(CCXT_SYMBOL, 60000.126) in ("60000.13", "60000.12")
            and ex.amount_to_precision(CCXT_SYMBOL, 0.0012345) == "0.00123"
        )
        return ok, (
            f"active={m['active']} precision={pr} limits.price={lim['price']} limits.amount={lim['amount']} "
            f"limits.cost={lim['cost']} amount_to_precision(0.0012345)={ex.amount_to_precision(CCXT_SYMBOL, 0.0012345)}"
        )

    if not run_check(f"{P}: load_markets: BTC/USD precision (0.01 / 0.00001) and limits", markets):
        return

    def listen_key():
        lk = ex.publicPostUserDataStream()["listenKey"]
        r1 = ex.publicPutUserDataStream({"listenKey": lk})
        r2 = ex.publicDeleteUserDataStream({"listenKey": lk})
        try:
            ex.publicPutUserDataStream({"listenKey": lk})
            return False, "keepalive after close succeeded"
        except ccxt.BaseError as e:
            # -1125 maps to AuthenticationError in ccxt's exact table
            return isinstance(e, ccxt.AuthenticationError), f"put={r1} delete={r2} after-close: {type(e).__name__} {e}"

    run_check(f"{P}: userDataStream POST/PUT/DELETE (+ AuthenticationError(-1125) after close)", listen_key)
    px.expected_errors.append(("PUT", "/api/v3/userDataStream", -1125))

    book = {}

    def ticker():
        t = ex.fetch_bids_asks([CCXT_SYMBOL])[CCXT_SYMBOL]
        book.update(bid=dec(t["bid"]), ask=dec(t["ask"]))
        return book["bid"] < book["ask"], f"bid={t['bid']} ask={t['ask']}"

    if not run_check(f"{P}: fetch_bids_asks", ticker):
        return

    order = {}

    def place():
        price = float(price_str(book["bid"] * Decimal("0.99")))
        o = ex.create_order(CCXT_SYMBOL, "limit", "buy", float(QTY), price, {"postOnly": True})
        order.update(id=o["id"], price=price)
        f = ex.fetch_order(o["id"], CCXT_SYMBOL)
        return f["status"] == "open" and f["postOnly"] is True, (
            f"id={o['id']} price={price} status={f['status']} type={f['type']} postOnly={f['postOnly']} "
            f"info.type={f['info'].get('type')}"
        )

    if run_check(f"{P}: create_order limit postOnly below bid rests (fetch_order open)", place):

        def fill():
            st = px.fill_until_filled(order["id"], lambda: ex.fetch_order(order["id"], CCXT_SYMBOL)["info"]["status"])
            f = ex.fetch_order(order["id"], CCXT_SYMBOL)
            return st == "FILLED" and f["status"] == "closed", f"info.status={st} status={f['status']} filled={f['filled']}"

        if run_check(f"{P}: forced fill -> fetch_order closed", fill):

            def trades():
                ts = [t for t in ex.fetch_my_trades(CCXT_SYMBOL) if t["order"] == order["id"]]
                total = sum(dec(t["amount"]) for t in ts)
                ok = ts and total == dec(QTY) and all(t["takerOrMaker"] == "maker" and t["side"] == "buy" for t in ts)
                ok = ok and all(t["info"]["isMaker"] is True for t in ts)
                return ok, f"{len(ts)} fill(s), sum amount={total}, takerOrMaker={[t['takerOrMaker'] for t in ts]}"

            run_check(f"{P}: fetch_my_trades has the fill(s): sum amount == {QTY}, maker", trades)

    def cancel():
        price = float(price_str(book["bid"] * Decimal("0.98")))
        o = ex.create_order(CCXT_SYMBOL, "LIMIT_MAKER", "buy", float(QTY), price)
        x = ex.cancel_order(o["id"], CCXT_SYMBOL)
        return x["status"] == "canceled" and x["info"].get("status") == "CANCELED", (
            f"cancel -> status={x['status']} info.status={x['info'].get('status')}"
        )

    run_check(f"{P}: resting LIMIT_MAKER + cancel_order -> canceled", cancel)

    def crossing():
        try:
            o = ex.create_order(CCXT_SYMBOL, "limit", "buy", float(QTY), float(book["ask"]), {"postOnly": True})
            return False, f"accepted: {o['info']}"
        except ccxt.BaseError as e:
            return isinstance(e, ccxt.OrderImmediatelyFillable), f"{type(e).__name__}: {e}"

    run_check(f"{P}: crossing postOnly buy (at best ask) -> OrderImmediatelyFillable", crossing)
    px.expected_errors.append(("POST", "/api/v3/order", -2010))


# ---------------------------------------------------------------------------------------------
# The user-data WebSocket, with websocket-client


def run_ws(px):
    import websocket

    P = "ws"
    status, body = px.http("POST", "/api/v3/userDataStream", headers={"X-MBX-APIKEY": px.key})
    if not check(f"{P}: listen key for the stream", status == 200 and "listenKey" in (body or {}), f"HTTP {status}"):
        return
    lk = body["listenKey"]
    ping_every = 20 / TIME_SCALE
    pings, reports, other = [], [], []

    ws = {}

    def connect():
        sslopt = {"ca_certs": px.ca} if px.ca else None
        ws["c"] = websocket.create_connection(f"{px.ws}/ws/{lk}", timeout=2 * ping_every + 1, sslopt=sslopt)
        return True, f"connected to {px.ws}/ws/<listenKey>"

    if not run_check(f"{P}: connect {px.ws}/ws/<listenKey>", connect):
        return
    conn = ws["c"]

    def recv_until(pred, deadline):
        """Reads frames (answering pings, which recv_data_frame does itself) until pred(report)."""
        while time.monotonic() < deadline:
            conn.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                opcode, frame = conn.recv_data_frame(control_frame=True)
            except websocket.WebSocketTimeoutException:
                return None
            if opcode == websocket.ABNF.OPCODE_PING:
                pings.append(time.monotonic())  # websocket-client has already sent the pong
                continue
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                raise RuntimeError(f"server closed the stream: {frame.data!r}")
            if opcode != websocket.ABNF.OPCODE_TEXT:
                other.append(opcode)
                continue
            ev = json.loads(frame.data)
            if ev.get("e") == "executionReport":
                reports.append(ev)
                if pred(ev):
                    return ev
            else:
                other.append(ev.get("e"))
        return None

    status, t = px.http("GET", "/api/v3/ticker/bookTicker", {"symbol": SYMBOL})
    bid = dec(t["bidPrice"])
    price = price_str(bid * Decimal("0.99"))
    status, o = px.signed(
        "POST", "/api/v3/order", {"symbol": SYMBOL, "side": "BUY", "type": "LIMIT_MAKER", "quantity": QTY, "price": price}
    )
    if not check(f"{P}: REST LIMIT_MAKER for the stream", status == 200, f"HTTP {status} {o}"):
        return
    oid = o["orderId"]

    def key_check(ev):
        keys = set(ev)
        missing, extra = sorted(EXEC_REPORT_KEYS - keys), sorted(keys - EXEC_REPORT_KEYS)
        return not missing and not extra, f"missing={missing} extra={extra}"

    def new_report():
        ev = recv_until(lambda e: e.get("i") == oid and e.get("x") == "NEW", time.monotonic() + 5)
        if ev is None:
            return False, f"no NEW executionReport within 5 s (reports={len(reports)}, other={other})"
        ok, detail = key_check(ev)
        sem = (
            ev["X"] == "NEW" and ev["o"] == "LIMIT_MAKER" and ev["S"] == "BUY" and ev["s"] == SYMBOL
            and ev["t"] == -1 and ev["N"] is None and ev["w"] is True and ev["C"] == ""
            and dec(ev["q"]) == dec(QTY) and dec(ev["p"]) == dec(price) and ev["c"] == o["clientOrderId"]
        )
        return ok and sem, f"{detail} x={ev['x']} X={ev['X']} t={ev['t']} N={ev['N']} w={ev['w']}"

    run_check(f"{P}: executionReport NEW with exactly the documented keys", new_report)

    def trade_reports():
        trades = []
        for _ in range(20):
            px.fault("fill", symbol=SYMBOL, order_id=str(oid))
            ev = recv_until(lambda e: e.get("i") == oid and e.get("x") == "TRADE", time.monotonic() + 5)
            if ev is None:
                return False, f"no TRADE executionReport within 5 s (reports={len(reports)})"
            trades.append(ev)
            if ev["X"] == "FILLED":
                break
        details = []
        ok = True
        for ev in trades:
            k_ok, k_detail = key_check(ev)
            ok = ok and k_ok and ev["m"] is True and ev["t"] != -1 and ev["N"] is not None
            details.append(f"X={ev['X']} l={ev['l']} m={ev['m']} t={ev['t']} {k_detail}")
        total = sum(dec(ev["l"]) for ev in trades)
        ok = ok and trades[-1]["X"] == "FILLED" and total == dec(QTY) and dec(trades[-1]["z"]) == dec(QTY)
        return ok, f"{len(trades)} TRADE report(s), sum l={total}; " + "; ".join(details)

    run_check(f"{P}: executionReport TRADE (to FILLED) with exactly the documented keys, m=true", trade_reports)

    def server_pings():
        # wait for two pings; answering them (websocket-client does) must keep the stream open
        deadline = time.monotonic() + 2 * ping_every + 2
        while len(pings) < 2 and time.monotonic() < deadline:
            recv_until(lambda e: False, min(deadline, time.monotonic() + ping_every))
        return len(pings) >= 2, f"{len(pings)} ping frame(s) (opcode 0x9) in {2 * ping_every + 2:.0f} s"

    run_check(f"{P}: server pings every {ping_every:.0f} s (opcode 0x9), answered with pongs", server_pings)
    try:
        conn.close()
    except Exception:  # noqa: BLE001
        pass

    def session_report():
        rep = px.report()
        sessions = rep.get("sessions", [])
        s = [x for x in sessions if x.get("pings_sent", 0) > 0]
        return bool(s) and all(x.get("pongs_received", 0) > 0 for x in s), f"sessions={sessions}"

    run_check(f"{P}: report: the session saw pings and our pongs", session_report)
    px.http("DELETE", "/api/v3/userDataStream", {"listenKey": lk}, headers={"X-MBX-APIKEY": px.key})


# ---------------------------------------------------------------------------------------------


def check_report(px):
    def errors():
        rep = px.report()
        expected = list(px.expected_errors)
        unexpected = []
        for e in rep.get("errors", []):
            key = (e.get("method"), e.get("path"), e.get("code"))
            if key in expected:
                expected.remove(key)
            else:
                unexpected.append(e)
        return not unexpected and not expected, f"unexpected={unexpected} expected-but-missing={expected}"

    run_check("report: errors are exactly the expected rejections", errors)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binary", help="path of the binance-syncd binary")
    ap.add_argument("--only", action="append", choices=GROUPS + ["rest"], default=[], help="run only these groups")
    ap.add_argument("--skip", action="append", choices=GROUPS + ["rest"], default=[], help="skip these groups")
    ap.add_argument("--tls", action="store_true", help="run the paper exchange with --tls and trust its certificate")
    args = ap.parse_args()

    def expand(gs):
        return {g for x in gs for g in (["pybinance", "connector", "ccxt"] if x == "rest" else [x])}

    groups = [g for g in GROUPS if (not args.only or g in expand(args.only) or g == "report") and g not in expand(args.skip)]

    started = time.monotonic()
    px = Paper(args.binary, tls=args.tls)
    px.expected_errors = []
    if px.ca:
        # requests (python-binance, binance-connector, ccxt) reads its CA bundle from here.
        os.environ["REQUESTS_CA_BUNDLE"] = px.ca
        check("tls: https:// and wss:// with a CA file", px.rest.startswith("https://") and px.ws.startswith("wss://"), f"{px.rest} {px.ws}")
    print(f"paper exchange: rest={px.rest} ws={px.ws}; groups: {', '.join(groups)}", flush=True)
    # A still market: prices move only when a check moves them, so "below the bid" and
    # "at the ask" stay true between reading the ticker and placing the order.
    runners = {"pybinance": run_pybinance, "connector": run_connector, "ccxt": run_ccxt, "ws": run_ws, "report": check_report}
    return run_groups(px, runners, groups, started)


def run_groups(px, runners, groups, started):
    """Quiesces the paper market, runs `runners[g](px)` for each group, stops the exchange and
    prints the summary; the process's exit status (1 if any check failed)."""
    try:
        px.fault("quiesce")
        for g in groups:
            try:
                runners[g](px)
            except Exception as e:  # noqa: BLE001
                check(f"{g}: ran to the end", False, f"{type(e).__name__}: {e}\n{traceback.format_exc()}")
    finally:
        code = px.stop()
    check("paper exchange exits 0 on SIGTERM", code == 0, f"exit status {code}")
    failed = [r for r in RESULTS if not r[0]]
    print(f"\n{len(RESULTS) - len(failed)}/{len(RESULTS)} checks passed in {time.monotonic() - started:.1f} s", flush=True)
    if failed:
        print("FAILED:\n" + "\n".join(f"  {n}  -- {d}" for _, n, d in failed))
        print("--- paper exchange log (tail) ---\n" + px.stderr())
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
