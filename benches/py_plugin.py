#!/usr/bin/env python3
"""The plugins bench's Python strategy: the test plugin's (plugins/test-plugin) `stamp` and
`flood` modes written with the SDK, so that its rows compare with the `.so` ones line for line.

Installed by the bench as a program plugin with `binance_syncd.py` beside it. NAME.conf:

- `record = PATH`: where it appends its lines (kept open, flushed after each line, as the
  test plugin does);
- `mode = stamp`: `stamp SEQ UNIX_NS` at the entry of each `on_fill`, UNIX_NS read first thing
  from CLOCK_REALTIME, the clock of the test plugin's `SystemTime::now()` and of the fill
  log's publish time it is compared with;
- `flood = N`: on the first price of BTCUSD, N maker BUYs under the bid at once; `busy B`
  (refused as busy) after the loop, `flood N NS` once all N are placed (NS from the first
  place to the last answer, monotonic clock).
"""
import os
import sys
import time
from decimal import Decimal

sys.dont_write_bytecode = True
# The daemon runs a private copy of this file, elsewhere: the SDK is in the plugin folder.
sys.path.insert(0, os.environ.get("SYNCD_PLUGIN_DIR", os.path.dirname(os.path.abspath(__file__))))
import binance_syncd as sdk  # noqa: E402

_REALTIME = time.CLOCK_REALTIME
_now_ns = time.clock_gettime_ns


class Bench(sdk.Strategy):
    VERSION = "1"

    def on_start(self, info):
        path = self.setting("record")
        self.out = open(path, "a") if path else None
        self.stamp = self.setting("mode") == "stamp"
        self.flood = int(self.setting("flood", "0"))
        self.flood_started = None
        self.placed = 0
        self.line("start " + self.VERSION)

    def line(self, text):
        if self.out is not None:
            self.out.write(text + "\n")
            self.out.flush()

    def on_fill(self, fill):
        now = _now_ns(_REALTIME)
        if self.stamp:
            self.line("stamp %d %d" % (fill.seq, now))

    def on_price(self, price):
        if self.flood == 0 or self.flood_started is not None or price.symbol != "BTCUSD":
            return
        self.flood_started = time.monotonic_ns()
        cent = Decimal("0.01")
        busy = 0
        for i in range(self.flood):
            try:
                self.place("BTCUSD", sdk.Side.BUY, price.bid - cent * (i % 400 + 1), "0.0002")
            except sdk.Refused as e:
                if not e.busy:
                    raise
                busy += 1
        self.line("busy %d" % busy)

    def on_order(self, update):
        if update.kind != sdk.UpdateKind.PLACED:
            return
        self.placed += 1
        if self.placed == self.flood and self.flood_started is not None:
            self.line("flood %d %d" % (self.flood, time.monotonic_ns() - self.flood_started))


if __name__ == "__main__":
    sdk.run(Bench)
