#!/usr/bin/env python3
"""A strategy that uses every part of the Python SDK once per kind of call, for
`binance-syncd conformance` (tests/it/conformance.rs): with it, the conformance run exercises
every message a plugin can send (each intent kind, rules of a traded symbol and of one not
traded, log at every level), so the SDK's side of the protocol is judged whole. It trades
nothing sensible."""
from decimal import Decimal

import binance_syncd as sd  # beside it in the plugin folder (PYTHONPATH names it)


class Probe(sd.Strategy):
    VERSION = "probe 1"

    def on_start(self, info):
        self.journal = sd.Journal()
        self.log.info("probe started with %d symbols" % len(info.snapshot.get("symbols", {})))
        rules = self.rules("BTCUSD")
        if rules is None or rules.get("symbol") != "BTCUSD":
            raise sd.Disable("no rules for BTCUSD")
        if self.rules("NOPEUSD") is not None:
            raise sd.Disable("rules for a symbol not traded")

    def _try(self, what, intent):
        try:
            request = intent()
            self.log.debug("%s: request %d" % (what, request))
        except sd.Refused as e:
            # Not retried here: BUSY waits for a later call, a refusal is final.
            self.log.warn("%s refused: %s" % (what, e.reason.name))

    def on_tick(self, now_ms):
        self._try("place", lambda: self.place("BTCUSD", sd.Side.BUY, Decimal("59000.00"), Decimal("0.001")))

    def on_price(self, price):
        self._try("cancel", lambda: self.cancel(price.symbol, order_id=1400))

    def on_balance(self, balance):
        self._try("cancel all", lambda: self.cancel_all("BTCUSD"))

    def on_fill(self, fill):
        # The restart hands it a fill it acted on: acknowledged, not acted on again.
        if fill.replayed and fill in self.journal:
            self.log.info("fill %d (trade %d) replayed: acted on before" % (fill.seq, fill.trade_id))
            return
        self.journal.add(fill)
        self._try(
            "replace",
            lambda: self.replace(fill.symbol, fill.side, fill.price - Decimal("1.00"), fill.qty, order_id=fill.order_id),
        )

    def on_order(self, update):
        self.log.debug("order %s of request %d: %s" % (update.kind.name, update.request, update.reason_code.name))

    def on_book(self, book):
        self.log.debug("book %s touch %s" % (book.symbol, book.touch()))

    def on_trade(self, trade):
        self.log.debug("trade %s %s at %s" % (trade.symbol, trade.qty, trade.price))

    def on_stop(self):
        self.log.error("probe stopping (logged as an error to use every level)")


sd.run(Probe)
