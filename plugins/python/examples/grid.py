#!/usr/bin/env python3
"""grid: a small maker-only grid on each symbol, in Python (plugins/grid-maker, ported).

On the first touch of a symbol (best bid and ask) it quotes ``levels`` BUYs under the bid and
``levels`` SELLs over the ask, ``spacing`` ticks apart, each worth about ``quote`` in the quote
asset. When one of its orders fills it quotes the other side ``spacing`` ticks from the fill,
never through the touch, so the grid keeps capturing the spread. It follows the touch as it
moves (``on_book``, where the daemon's market stream is up; ``on_price`` at each tick
otherwise): once the touch has moved ``spacing`` ticks or more from where the grid was laid,
it cancels its orders on the symbol and lays the grid again around the new touch, so its
quotes neither cross nor drift out of the market.

Every order goes through the daemon's executor, which rounds it onto the exchange's grid,
refuses anything that would cross the book and holds the strategy to its limits. All
arithmetic is exact (``decimal.Decimal``). Refusals are told apart by ``reason_code``, never
by their words: one for the strategy's order rate (or a full queue) is tried again on a later
tick; any other is not retried.

It keeps to its pace: after a refusal for its order rate (or a full queue) it sends nothing
more, and lays no grid again, until one order sent as a probe (one per tick) is taken. Quotes
wanted meanwhile wait in a short list; a symbol whose touch moved is laid again once the pace
is back. Without this, a touch that moves a grid step several times a second had it send
about ten times its budget, nearly all of it refused (937 of 1017 intents in a 20 s demo).

Settings (``NAME.conf`` beside this file, e.g. ``grid.conf``): ``levels`` (3), ``spacing``
(ticks, 10), ``quote`` (20), ``symbols`` (comma-separated; default: every symbol the daemon
trades), ``requote`` (``true``; ``false`` lays each grid once), ``book_depth`` (read by the
daemon; one level is enough here).

Install: ``install -m 0755 grid.py $SYNCD_PLUGIN_DIR/.grid.py.tmp && mv
$SYNCD_PLUGIN_DIR/.grid.py.tmp $SYNCD_PLUGIN_DIR/grid.py`` with ``binance_syncd.py`` where
Python finds it (installed with pip, or beside this file).
"""

import os
import sys
from decimal import ROUND_DOWN, Context, Decimal, InvalidOperation

# No .pyc files written beside the plugin (its folder is the daemon's, and watched).
sys.dont_write_bytecode = True
# Where pip did not install the SDK: binance_syncd.py beside this file (Python looks there by
# itself), one folder up (the repository's plugins/python/), or in the plugin folder the daemon
# names in SYNCD_PLUGIN_DIR or the folder above it (where `binance-syncd demo` puts it): the
# daemon runs a private copy of this file from its state directory, not the file itself.
_HERE = os.path.dirname(os.path.abspath(__file__))
_PLUGINS = os.environ.get("SYNCD_PLUGIN_DIR", "")
for _dir in [os.path.join(_HERE, os.pardir)] + ([_PLUGINS, os.path.join(_PLUGINS, os.pardir)] if _PLUGINS else []):
    if os.path.isfile(os.path.join(_dir, "binance_syncd.py")):
        sys.path.append(_dir)
        break

from binance_syncd import Reason, Refused, Side, Strategy, UpdateKind, run  # noqa: E402

# Truncating division, as the Rust grid's `checked_div`: a quantity is never rounded up past
# what `quote` buys.
_DOWN = Context(prec=60, rounding=ROUND_DOWN)


def _filter_value(rules, filter_type, field):
    """A decimal field of one of a symbol's exchange filters, or None."""
    for f in rules.get("filters", []) if isinstance(rules, dict) else []:
        if isinstance(f, dict) and f.get("filterType") == filter_type:
            try:
                return Decimal(str(f[field]))
            except (KeyError, InvalidOperation):
                return None
    return None


def _significant_scale(d):
    """Digits after the point that carry value: 0.01000000 -> 2."""
    return max(0, -d.normalize().as_tuple().exponent)


def _int(text, default):
    try:
        return int(text)
    except (TypeError, ValueError):
        return default


class Grid(Strategy):
    """The grid; see the module's docstring."""

    VERSION = "0.1.0"

    def on_start(self, info):
        snapshot = info.snapshot
        self.levels = _int(self.setting("levels"), 3)
        self.spacing = _int(self.setting("spacing"), 10)
        try:
            self.quote = Decimal(self.setting("quote", "20"))
        except InvalidOperation:
            self.quote = Decimal(20)
        wanted = self.setting("symbols")
        wanted = None if wanted is None else {s.strip().upper() for s in wanted.split(",") if s.strip()}
        self.requote = self.setting("requote") != "false"
        # tickSize and stepSize per symbol, from the exchange rules.
        self.grids = {}
        for symbol, rules in (snapshot.get("symbols") or {}).items():
            if wanted is not None and symbol not in wanted:
                continue
            tick = _filter_value(rules, "PRICE_FILTER", "tickSize")
            step = _filter_value(rules, "LOT_SIZE", "stepSize")
            if tick is None or step is None or tick <= 0:
                self.log.warn("%s: no tick or step in its rules; not trading it" % symbol)
                continue
            self.grids[symbol] = (tick.normalize(), step)
        self.tag = str(snapshot.get("tag") or "")
        self.quoted = set()
        self.touch = {}  # symbol -> (bid, ask), the last seen
        self.anchor = {}  # symbol -> (bid, ask) the grid was laid around
        self.asked = {}  # request id -> (symbol, side, price), to retry a refusal for pace
        self.retry = []  # (symbol, side, price) refused for pace, tried again on later ticks
        # Over its pace: from a refusal for the order rate or a full queue until a probe is
        # taken; nothing is sent meanwhile but that one probe.
        self.paced = False
        self.probe = None  # the request id of the probe in flight
        self.stale = set()  # symbols whose touch moved while paced: laid again once it is back
        self.placed = 0
        self.requotes = 0
        self.log.info("grid %s on %s" % (self.VERSION, sorted(self.grids)))

    # -- the market --------------------------------------------------------------------------

    def on_book(self, book):
        touch = book.touch()
        if touch is not None:
            self.touched(book.symbol, touch[0], touch[1])

    def on_price(self, price):
        self.touched(price.symbol, price.bid, price.ask)

    def touched(self, symbol, bid, ask):
        """A new best bid and ask of ``symbol``: the first lays its grid, a move of
        ``spacing`` ticks or more lays it again around the new touch."""
        if bid >= ask:
            return  # a crossed or locked touch is no place to quote around
        self.touch[symbol] = (bid, ask)
        if symbol not in self.grids:
            return
        if symbol in self.quoted:
            step = self.offset(symbol, self.spacing)
            was_bid, was_ask = self.anchor[symbol]
            moved = abs(bid - was_bid) >= step or abs(ask - was_ask) >= step
            if not self.requote or not moved:
                return
            if self.paced:
                # Its orders now would all be refused: laid again once the pace is back.
                self.stale.add(symbol)
                return
        self.lay(symbol)

    def lay(self, symbol):
        """Lays the grid of ``symbol`` around its last touch, cancelling the old one first.
        While paced, its first order is the probe (if none is in flight) and the others wait."""
        bid, ask = self.touch[symbol]
        if symbol in self.quoted:
            try:
                self.cancel_all(symbol)
            except Refused:
                self.stale.add(symbol)  # busy: a later tick tries again
                return
            self.requotes += 1
            # Answers to the old grid's orders no longer say anything about the new one.
            self.retry = [r for r in self.retry if r[0] != symbol]
        self.stale.discard(symbol)
        self.quoted.add(symbol)
        self.anchor[symbol] = (bid, ask)
        for k in range(1, self.levels + 1):
            off = self.offset(symbol, k * self.spacing)
            for side, price in ((Side.BUY, bid - off), (Side.SELL, ask + off)):
                self.quote_at(symbol, side, price, probe=self.paced and self.probe is None)

    def offset(self, symbol, ticks):
        """``ticks`` ticks of ``symbol``'s price grid."""
        return self.grids[symbol][0] * ticks

    def quote_at(self, symbol, side, price, probe=False):
        """One maker order worth about ``quote`` at ``price``; while paced (and not the
        ``probe``) it waits in the retry list instead."""
        _, step = self.grids[symbol]
        if price <= 0:
            return
        touch = self.touch.get(symbol)
        if touch is not None and (price >= touch[1] if side == Side.BUY else price <= touch[0]):
            return  # a quote that waited while the book moved through it: the executor refuses it
        if self.paced and not probe:
            self.wait(symbol, side, price)
            return
        qty = _DOWN.divide(self.quote, price).quantize(Decimal(1).scaleb(-_significant_scale(step)), rounding=ROUND_DOWN)
        if qty <= 0:
            return
        try:
            request = self.place(symbol, side, price, qty)
        except Refused as e:
            self.log.debug("%s: intent not queued (%s)" % (symbol, e.reason.name))
            if e.reason == Reason.BUSY:
                self.paced = True
                self.wait(symbol, side, price)
            return
        self.placed += 1
        self.asked[request] = (symbol, side, price)
        if probe:
            self.probe = request

    def wait(self, symbol, side, price):
        """Keeps a quote for a later tick; the list holds the newest ``2 * levels`` per symbol
        (an old quote is of less use than a new one)."""
        self.retry.append((symbol, side, price))
        mine = [r for r in self.retry if r[0] == symbol]
        if len(mine) > 2 * self.levels:
            self.retry.remove(mine[0])

    # -- what became of it -------------------------------------------------------------------

    def on_fill(self, fill):
        # This daemon's order (the daemon decides, knowing its instance), and of this tag.
        ours = fill.own and self.tag and fill.client_order_id.startswith("sd-%s-" % self.tag)
        if not ours or fill.replayed or fill.symbol not in self.grids:
            return
        off = self.offset(fill.symbol, self.spacing)
        # The other side, `spacing` ticks from the fill, but never through the touch: the
        # executor would refuse a price that takes.
        touch = self.touch.get(fill.symbol)
        if fill.side == Side.BUY:
            price = fill.price + off
            if touch is not None:
                price = max(price, touch[1])
        else:
            price = fill.price - off
            if touch is not None:
                price = min(price, touch[0])
        self.quote_at(fill.symbol, fill.side.opposite(), price)

    def on_order(self, update):
        if update.kind == UpdateKind.UNKNOWN:
            return  # a second update for this request follows: keep what it asked until then
        asked = self.asked.pop(update.request, None)
        probe = update.request == self.probe
        if probe:
            self.probe = None
            if update.kind == UpdateKind.PLACED:
                self.paced = False  # the pace is back: the next tick sends what waited
        if update.kind == UpdateKind.UNRESOLVED:
            # The quote may be resting or not; quoting it again could double it. The daemon
            # counts it as open and its reports show it if it exists, so the grid goes on with
            # one level fewer.
            what = "" if asked is None else " (%s %s at %s)" % (asked[0], asked[1].name, asked[2])
            self.log.warn(
                "request %d%s: %s unresolved: %s; not quoted again"
                % (update.request, what, update.client_order_id, update.reason)
            )
            return
        if update.kind in (UpdateKind.REFUSED, UpdateKind.REJECTED):
            self.log.debug("request %d: %s (%s)" % (update.request, update.status, update.reason))
            # Over its pace, or its queue full: the same quote, a little later. Anything else
            # (a filter, the balance, a book that moved: the next touch lays the grid again)
            # is not retried.
            if update.reason_code in (Reason.ORDER_RATE, Reason.BUSY):
                self.paced = True
                if asked is not None:
                    self.wait(*asked)

    def on_tick(self, now_ms):
        if self.paced:
            # One probe a tick at most, and none while one is in flight.
            if self.probe is None and self.stale:
                # A grid to lay again: its first order is the probe, the others wait.
                self.lay(sorted(self.stale)[0])
            elif self.probe is None and self.retry:
                symbol, side, price = self.retry.pop()
                self.quote_at(symbol, side, price, probe=True)
            return
        for symbol in sorted(self.stale):
            self.lay(symbol)
        # What waited, newest first, a grid's worth a tick (a refusal for pace stops the rest
        # at the next tick).
        for _ in range(2 * self.levels):
            if not self.retry:
                break
            symbol, side, price = self.retry.pop()
            self.quote_at(symbol, side, price)

    def on_stop(self):
        self.log.info("grid stopping after %d orders, %d grids laid again" % (self.placed, self.requotes))


if __name__ == "__main__":
    run(Grid)
