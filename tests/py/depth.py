#!/usr/bin/env python3
"""The paper exchange's diff depth stream kept as a local order book by independent clients.

    python tests/py/depth.py <path/to/binance-syncd> [--only GROUP ...] [--skip GROUP ...]

Groups:
  connector  binance-connector's SpotWebsocketStreamClient (SUBSCRIBE to <s>@depth@100ms on
             /ws) and its REST Spot(base_url=...).depth(), joined by this script exactly as
             Binance documents it ("How to manage a local order book correctly",
             https://docs.binance.us/#websocket-market-streams): buffer the events, take a
             snapshot, drop events with u <= lastUpdateId, the first event applied must have
             U <= lastUpdateId + 1 <= u, each next one U == previous u + 1, and on a gap start
             over. The paper exchange is made to skip events (the `market_gap` fault): the gap
             must be seen and the book resynced, and once the market is still the book must
             equal GET /api/v3/depth level for level.
  pybinance  python-binance's DepthCacheManager (asyncio) with its AsyncClient and
             BinanceSocketManager pointed at the paper exchange by their documented base URL
             attributes (API_URL, STREAM_URL). Its cache must equal GET /api/v3/depth once the
             market is still. No gap here: on a gap it re-snapshots and then still applies the
             event that revealed the gap, which can be older than the new snapshot (its own
             behaviour, not the exchange's).

The market is quiesced and moved by `touch` faults from a thread (a few ticks up and down), so
the book changes under the clients and is still once the mover stops. One PASS/FAIL line per
check, as tests/py/clients.py (whose paper exchange process and check helpers this reuses);
exit 1 if any failed.
"""

import argparse
import asyncio
import json
import queue
import sys
import threading
import time
from decimal import Decimal

from clients import SYMBOL, TICK, Paper, run_check, run_groups

GROUPS = ["connector", "pybinance"]
DEPTH_LIMIT = 5000  # the documented maximum: the whole paper book, not just its top


def book_of(side):
    """[[price, qty], ...] (strings) -> {Decimal price: Decimal qty}."""
    return {Decimal(p): Decimal(q) for p, q, *_ in side}


def diff_books(mine, theirs):
    """A short description of where two {price: qty} sides differ; empty if equal."""
    out = []
    for p in sorted(set(mine) | set(theirs)):
        a, b = mine.get(p), theirs.get(p)
        if a != b:
            out.append(f"{p}: ours {a} exchange {b}")
    return "; ".join(out[:6]) + (f" (+{len(out) - 6} more)" if len(out) > 6 else "")


class Mover:
    """Moves the paper market's touch a tick at a time (`touch` fault) until stopped."""

    def __init__(self, px, every=0.06):
        status, t = px.http("GET", "/api/v3/ticker/bookTicker", {"symbol": SYMBOL})
        if status != 200:
            raise RuntimeError(f"bookTicker: HTTP {status} {t}")
        self.px, self.base, self.every = px, Decimal(t["bidPrice"]), every
        self.moves = 0
        self.stop_flag = threading.Event()
        self.error = None
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        steps = [0, 1, 2, 3, 2, 1, 0, -1, -2, -3, -2, -1]
        while not self.stop_flag.is_set():
            bid = self.base + TICK * steps[self.moves % len(steps)]
            try:
                self.px.fault("touch", symbol=SYMBOL, bid=str(bid))
            except Exception as e:  # noqa: BLE001 - reported by stop()
                self.error = e
                return
            self.moves += 1
            self.stop_flag.wait(self.every)

    def stop(self):
        self.stop_flag.set()
        self.thread.join(5)
        if self.error:
            raise RuntimeError(f"moving the market failed: {self.error}")


class LocalBook:
    """One symbol's book kept from a diff depth stream and REST snapshots, as Binance documents."""

    def __init__(self, snapshot):
        self.snapshot = snapshot  # () -> the GET /api/v3/depth reply
        self.bids, self.asks = {}, {}
        self.synced = False
        self.buffer = []  # events read while not synced (step 2)
        self.last_id = None  # the snapshot's lastUpdateId
        self.prev_u = None  # u of the last applied event; None: none since the snapshot
        self.applied = 0
        self.dropped = 0
        self.gaps = []  # (expected U, received U, u)
        self.lost = []  # why the book was given up, in order
        self.snapshots = []  # lastUpdateId of each snapshot taken

    def on_event(self, ev):
        if self.synced:
            self._apply_checked(ev)
        else:
            self.buffer.append(ev)

    def _lose(self, ev, why):
        """Start over (step 1): this event is the first of the next buffer."""
        self.synced, self.prev_u, self.buffer = False, None, [ev]
        self.lost.append(why)

    def _apply_checked(self, ev):
        U, u = ev["U"], ev["u"]
        if self.prev_u is None:
            if u <= self.last_id:  # step 4: older than the snapshot
                self.dropped += 1
                return
            if not U <= self.last_id + 1 <= u:  # step 5
                self._lose(ev, f"first event U={U} u={u} does not bracket lastUpdateId+1={self.last_id + 1}")
                return
        elif U != self.prev_u + 1:  # step 6
            self.gaps.append((self.prev_u + 1, U, u))
            self._lose(ev, f"gap: expected U={self.prev_u + 1}, got U={U} (u={u})")
            return
        for side, levels in ((self.bids, ev["b"]), (self.asks, ev["a"])):
            for p, q in levels:  # steps 7-9: absolute quantities, 0 removes (maybe an absent level)
                p, q = Decimal(p), Decimal(q)
                if q == 0:
                    side.pop(p, None)
                else:
                    side[p] = q
        self.prev_u = u
        self.applied += 1

    def sync(self):
        """Steps 3-5 once an event is buffered; True when the book is live."""
        if self.synced or not self.buffer:
            return self.synced
        snap = self.snapshot()
        self.snapshots.append(snap["lastUpdateId"])
        buffered, self.buffer = self.buffer, []
        if buffered[0]["U"] > snap["lastUpdateId"] + 1:
            # "If the snapshot's lastUpdateId is strictly less than the U from step 2, go back
            # to step 3": events are missing between the snapshot and the buffer.
            self.buffer = buffered
            self.lost.append(f"snapshot {snap['lastUpdateId']} older than the first buffered U={buffered[0]['U']}")
            return False
        self.bids, self.asks = book_of(snap["bids"]), book_of(snap["asks"])
        self.last_id, self.prev_u, self.synced = snap["lastUpdateId"], None, True
        for ev in buffered:
            if self.synced:
                self._apply_checked(ev)
            else:
                self.buffer.append(ev)
        return self.synced


def run_connector(px):
    from binance.spot import Spot
    from binance.websocket.spot.websocket_stream import SpotWebsocketStreamClient

    P = "binance-connector"
    spot = Spot(base_url=px.rest)
    frames = queue.Queue()
    replies, errors = [], []

    def on_message(_, message):
        frames.put(message)

    def on_error(_, e):
        errors.append(repr(e))

    book = LocalBook(lambda: spot.depth(SYMBOL, limit=1000))
    # The connector appends /ws to its stream_url and subscribes with a SUBSCRIBE message.
    ws = SpotWebsocketStreamClient(stream_url=px.ws, on_message=on_message, on_error=on_error)
    mover = None
    try:
        ws.diff_book_depth(symbol=SYMBOL, speed=100, id=1)
        mover = Mover(px)

        def pump(until, timeout):
            """Feeds frames to the book until `until()` or the timeout; False on timeout."""
            deadline = time.monotonic() + timeout
            while not until():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                try:
                    msg = json.loads(frames.get(timeout=min(left, 0.2)))
                except queue.Empty:
                    continue
                if msg.get("e") == "depthUpdate":
                    book.on_event(msg)
                    book.sync()
                elif "id" in msg:
                    replies.append(msg)
            return True

        def synced():
            ok = pump(lambda: book.synced and book.applied >= 10, 20)
            return ok, (
                f"SUBSCRIBE replies {replies}, snapshots at {book.snapshots}, {book.dropped} events older than "
                f"the snapshot dropped, {book.applied} applied, errors {errors}"
            )

        if not run_check(f"{P}: {SYMBOL}@depth@100ms joined to depth(limit=1000) as documented", synced):
            return
        run_check(
            f"{P}: SUBSCRIBE answered {{result: null, id: 1}}",
            lambda: (replies[:1] == [{"result": None, "id": 1}], f"{replies}"),
        )

        def gap():
            before = (len(book.gaps), len(book.snapshots), book.applied)
            px.fault("market_gap", symbol=SYMBOL, count=2)
            ok = pump(
                lambda: len(book.gaps) > before[0] and book.synced and book.applied >= before[2] + 10,
                20,
            )
            skipped = px.report().get("depth_events_skipped")
            detail = (
                f"gaps seen {book.gaps[before[0]:]} (expected U, got U, u); resynced from snapshot(s) "
                f"{book.snapshots[before[1]:]}; {book.applied - before[2]} events applied since; the exchange "
                f"skipped {skipped} events; why the book was given up: {book.lost}"
            )
            print(f"  {P}: {detail}", flush=True)
            return ok and len(book.snapshots) > before[1], detail

        run_check(f"{P}: a market_gap is detected (U != previous u + 1) and the book resynced", gap)

        def equal():
            mover.stop()
            # The market is still: wait for the last event, the one that reaches the exchange's
            # update id, then compare every level.
            want = spot.depth(SYMBOL, limit=DEPTH_LIMIT)
            reached = pump(lambda: book.synced and book.prev_u is not None and book.prev_u >= want["lastUpdateId"], 10)
            got = spot.depth(SYMBOL, limit=DEPTH_LIMIT)
            bids, asks = book_of(got["bids"]), book_of(got["asks"])
            same = reached and got["lastUpdateId"] == book.prev_u and book.bids == bids and book.asks == asks
            return same, (
                f"ours: update id {book.prev_u}, {len(book.bids)} bids, {len(book.asks)} asks; exchange: update id "
                f"{got['lastUpdateId']}, {len(bids)} bids, {len(asks)} asks; {mover.moves} market moves; "
                f"bids differ: [{diff_books(book.bids, bids)}] asks differ: [{diff_books(book.asks, asks)}]"
            )

        run_check(f"{P}: the local book equals GET /api/v3/depth?limit={DEPTH_LIMIT} once the market is still", equal)
        run_check(f"{P}: no websocket error", lambda: (not errors, f"{errors}"))
    finally:
        if mover:
            mover.stop_flag.set()
        ws.stop()


def run_pybinance(px):
    from binance import AsyncClient, BinanceSocketManager, DepthCacheManager

    P = "python-binance"

    class PaperAsyncClient(AsyncClient):  # as in clients.py: API_URL without {} survives .format()
        API_URL = px.rest + "/api"

    class PaperSocketManager(BinanceSocketManager):  # STREAM_URL is formatted with the tld likewise
        STREAM_URL = px.ws + "/"

    async def follow():
        client = await PaperAsyncClient.create(px.key, px.secret, tld="us")
        mover = Mover(px)
        events = 0
        try:
            bm = PaperSocketManager(client)
            dcm = DepthCacheManager(client, SYMBOL, bm=bm, limit=DEPTH_LIMIT, refresh_interval=0, ws_interval=100, conv_type=Decimal)
            async with dcm as cache:
                while events < 20:
                    dc = await asyncio.wait_for(cache.recv(), 20)
                    events += dc is not None
                mover.stop()
                # Still market: read until a second passes without an event.
                while True:
                    try:
                        await asyncio.wait_for(cache.recv(), 1.0)
                    except asyncio.TimeoutError:
                        break
                dc = cache.get_depth_cache()
                ours = {"bids": {Decimal(p): q for p, q in dc.get_bids()}, "asks": {Decimal(p): q for p, q in dc.get_asks()}}
        finally:
            mover.stop_flag.set()
            await client.close_connection()
        got = await asyncio.to_thread(px.http, "GET", "/api/v3/depth", {"symbol": SYMBOL, "limit": DEPTH_LIMIT})
        return events, ours, got, mover.moves

    def equal():
        events, ours, (status, got), moves = asyncio.run(follow())
        if status != 200:
            return False, f"GET depth: HTTP {status} {got}"
        bids, asks = book_of(got["bids"]), book_of(got["asks"])
        return ours["bids"] == bids and ours["asks"] == asks, (
            f"{events} depth events, {moves} market moves; ours {len(ours['bids'])} bids {len(ours['asks'])} asks; "
            f"exchange {len(bids)} bids {len(asks)} asks (update id {got['lastUpdateId']}); "
            f"bids differ: [{diff_books(ours['bids'], bids)}] asks differ: [{diff_books(ours['asks'], asks)}]"
        )

    run_check(f"{P}: DepthCacheManager({SYMBOL}, ws_interval=100) equals GET /api/v3/depth once the market is still", equal)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binary", help="path of the binance-syncd binary")
    ap.add_argument("--only", action="append", choices=GROUPS, default=[], help="run only these groups")
    ap.add_argument("--skip", action="append", choices=GROUPS, default=[], help="skip these groups")
    args = ap.parse_args()
    groups = [g for g in GROUPS if (not args.only or g in args.only) and g not in args.skip]

    started = time.monotonic()
    px = Paper(args.binary)
    print(f"paper exchange: rest={px.rest} ws={px.ws}; groups: {', '.join(groups)}", flush=True)
    # Only the mover changes the book (the market is quiesced), so it is still once the mover stops.
    return run_groups(px, {"connector": run_connector, "pybinance": run_pybinance}, groups, started)


if __name__ == "__main__":
    sys.exit(main())
