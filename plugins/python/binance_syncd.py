"""Write a binance-syncd strategy in Python.

A strategy is an executable file in ``SYNCD_PLUGIN_DIR`` (``#!/usr/bin/env python3``, mode
0755) that subclasses :class:`Strategy` and hands the class to :func:`run`::

    #!/usr/bin/env python3
    from binance_syncd import Strategy, Side, Refused, run

    class Counter(Strategy):
        VERSION = "1.0"

        def on_start(self, info):
            self.fills = 0
            self.log.info("starting with levels=%s" % self.setting("levels"))

        def on_fill(self, fill):
            self.fills += 1
            self.log.info("fill #%d %s %s @ %s" % (fill.seq, fill.symbol, fill.qty, fill.price))

    if __name__ == "__main__":
        run(Counter)

The daemon runs the file with one socket as its stdin and stdout and speaks the plugin
protocol over it (``docs/plugin-protocol.md``): frames of a 4-byte big-endian length and that
many bytes of UTF-8 JSON. This module is the whole client side of that protocol, standard
library only, for Python 3.9 and newer:

- **Exactly once.** Every fill on the account reaches :meth:`Strategy.on_fill` in order; the
  daemon's cursor moves only when the callback has *returned* (the SDK acknowledges the fill
  then, never before). A fill that may have reached the strategy before a crash comes again
  with ``replayed=True``.
- **Exact decimals.** Prices and quantities are :class:`decimal.Decimal` in everything the
  strategy is given, and :meth:`Strategy.place` and :meth:`Strategy.replace` accept only
  ``Decimal``, ``int`` or a decimal ``str``: a ``float`` is refused with :class:`TypeError`
  before anything is sent (``0.1`` is not one tenth).
- **Typed refusals.** An intent the daemon does not queue raises :class:`Refused`, whose
  :attr:`Refused.reason` is a :class:`Reason` (``Reason.BUSY`` for the daemon's BUSY
  status); what became of a queued one comes to :meth:`Strategy.on_order` with a
  :class:`Reason` in ``reason_code``. Match the codes, never the words in ``reason``.
- **A clean channel.** At import, the module takes private duplicates of descriptors 0 and 1
  for the protocol, points descriptor 1 and ``sys.stdout`` at stderr and descriptor 0 at
  ``/dev/null``: a stray ``print`` (or a C library's ``printf``, or a child process's output)
  lands in the daemon's log under the plugin's name instead of corrupting the protocol.
- **Crashes are not hidden.** An exception escaping a callback ends the process with its
  traceback on stderr and a non-zero status; the SDK never swallows it. See :func:`run` for
  why.

Only the main thread, inside a callback, may call the host methods (:meth:`Strategy.place`,
:meth:`Strategy.cancel`, :meth:`Strategy.cancel_all`, :meth:`Strategy.replace`,
:meth:`Strategy.rules`): the daemon listens for them only while a callback runs. Logging works
anywhere (outside a callback it goes to stderr, which the daemon logs too).
"""

import collections
import dataclasses
import decimal
import enum
import json
import os
import struct
import sys
import threading
from decimal import Decimal
from typing import Any, Callable, Dict, List, Optional, Tuple, Type, Union

__all__ = [
    "ABI_MINOR",
    "Balance",
    "Book",
    "Disable",
    "Fill",
    "FrameTooLarge",
    "IntentKind",
    "Journal",
    "LogLevel",
    "Logger",
    "MAX_DOWN",
    "MAX_LOG",
    "MAX_UP",
    "OrderUpdate",
    "PROTO",
    "Price",
    "ProtocolError",
    "Reason",
    "Refused",
    "Side",
    "StartInfo",
    "Status",
    "Strategy",
    "Trade",
    "UpdateKind",
    "run",
    "setting",
]

__version__ = "0.1.0"

#: The protocol version this module speaks (the daemon's ``hello`` names the one it speaks).
PROTO = 1
#: The plugin ABI minor this module implements (``plugins/include/binance_syncd_plugin.h``):
#: 1.5, so it is sent reports, unresolved updates, BUSY, reason codes, books and trades.
ABI_MINOR = 5
#: Largest frame the daemon accepts from a plugin; a bigger one is refused here, unsent.
MAX_UP = 1 << 20
#: Largest frame this module accepts from the daemon (a start snapshot holds every symbol's
#: rules).
MAX_DOWN = 16 << 20
#: Longest log message sent, in UTF-8 bytes (cut on a character boundary).
MAX_LOG = 4096

# Exit statuses of the process, besides 0 (the daemon closed the channel) and 1 (an exception
# escaped a callback: Python's own status for an uncaught exception).
_EXIT_USAGE = 2
_EXIT_PROTOCOL = 4


class Status(enum.IntEnum):
    """The ABI's ``SYNCD_STATUS_*``: what a callback answers and what ``submit`` returns."""

    OK = 0
    PANICKED = -1
    #: The strategy failed (see :class:`Disable`): the daemon disables it until its file changes.
    ERROR = -2
    #: The daemon refused the intent (a malformed one, or the plugin is being stopped).
    REFUSED = -3
    #: The plugin's budget of intents not yet answered is spent; nothing was queued. Answers to
    #: earlier intents (order updates, after this callback) free it.
    BUSY = -4


class Side(enum.IntEnum):
    """``SYNCD_SIDE_*``."""

    BUY = 0
    SELL = 1

    def opposite(self) -> "Side":
        """The other side."""
        return Side.SELL if self is Side.BUY else Side.BUY


class UpdateKind(enum.IntEnum):
    """``SYNCD_UPDATE_*``: what became of an intent (or, ``REPORT``, the stream's report)."""

    PLACED = 0
    CANCELED = 1
    REPLACED = 2
    REFUSED = 3
    REJECTED = 4
    #: The request may or may not have taken effect; a second update (``resolved``) follows.
    UNKNOWN = 5
    #: The exchange never got it (known, not guessed).
    NOT_DONE = 6
    CANCELED_ALL = 7
    #: Not an answer (``request`` is 0): the stream reported one of the plugin's orders;
    #: ``status`` is its state (NEW, PARTIALLY_FILLED, FILLED, CANCELED, EXPIRED, ...).
    REPORT = 8
    #: A resolved ``UNKNOWN`` whose lookups gave up: the order ``client_order_id`` may or may
    #: not exist, is never sent again and counts as open until the daemon knows. Do not place
    #: it again blindly; watch for ``REPORT`` updates of that client id.
    UNRESOLVED = 9

    @classmethod
    def from_code(cls, code: int) -> "UpdateKind":
        """The kind numbered ``code``; a kind from a newer daemon reads as ``UNRESOLVED``, the
        only safe reading of "something happened that this SDK cannot name"."""
        try:
            return cls(code)
        except ValueError:
            return cls.UNRESOLVED


class Reason(enum.IntEnum):
    """``SYNCD_REASON_*``: why an intent was refused or rejected, as a number to match."""

    #: Not a refusal.
    NONE = 0
    OTHER = 1
    #: Not a symbol the daemon trades, or unknown to the exchange.
    SYMBOL = 2
    #: An exchange filter or the symbol's precision (``status`` names it), also -1013/-1111.
    FILTER = 3
    #: A maker order that would cross the book and take (refused here, or -2010).
    CROSSES_BOOK = 4
    BALANCE = 5
    #: The strategy's ``max open orders``.
    MAX_OPEN_ORDERS = 6
    #: The strategy's ``max orders per 10 s``: the same order a little later may pass.
    ORDER_RATE = 7
    #: The strategy's ``max order notional``.
    ORDER_NOTIONAL = 8
    #: The strategy's ``max symbol notional``.
    SYMBOL_NOTIONAL = 9
    #: Cancel or replace of an order that is not open.
    UNKNOWN_ORDER = 10
    #: Cancel or replace of another strategy's or client's order.
    NOT_ITS_ORDER = 11
    #: The strategy's queue in the executor is full (also :attr:`Status.BUSY` from ``submit``).
    BUSY = 12
    #: The plugin was stopped before its intent was served.
    REVOKED = 13
    #: The daemon is stopping.
    SHUTDOWN = 14
    #: The exchange refused the daemon's API key.
    KEY_REFUSED = 15
    #: Nothing reached the exchange (a local error).
    NOT_SENT = 16
    #: The daemon could not learn what became of it (``UpdateKind.UNRESOLVED``).
    UNRESOLVED = 17
    #: The exchange said no for another reason (``code`` is its error code).
    REJECTED = 18

    @classmethod
    def from_code(cls, code: int) -> "Reason":
        """The reason numbered ``code``; one this SDK does not know (a newer daemon's) reads as
        ``OTHER``."""
        try:
            return cls(code)
        except ValueError:
            return cls.OTHER


class IntentKind(enum.IntEnum):
    """``SYNCD_INTENT_*``."""

    PLACE = 0
    CANCEL = 1
    CANCEL_ALL = 2
    REPLACE = 3


class LogLevel(enum.IntEnum):
    """``SYNCD_LOG_*``."""

    ERROR = 1
    WARN = 2
    INFO = 3
    DEBUG = 4


class Refused(Exception):
    """The daemon did not queue an intent: nothing was sent and no ``on_order`` will come for
    it.

    :attr:`status` is the daemon's :class:`Status`; :attr:`reason` the matching
    :class:`Reason` (``Reason.BUSY`` for ``Status.BUSY``, ``Reason.OTHER`` for a plain
    refusal). Not caught, it ends the process like any exception in a callback: catch it
    where an intent may be refused (BUSY is ordinary under load)."""

    def __init__(self, status: int) -> None:
        try:
            self.status = Status(status)  # type: Union[Status, int]
        except ValueError:
            self.status = status
        self.reason = Reason.BUSY if status == Status.BUSY else Reason.OTHER
        super().__init__("intent refused by the daemon: status %s (%s)" % (status, self.reason.name))

    @property
    def busy(self) -> bool:
        """The budget of unanswered intents is spent: try again once answers came (a later
        callback), not in a loop."""
        return self.status == Status.BUSY


class Disable(Exception):
    """Raise from a callback to stop the strategy on purpose (bad settings, say): the message
    is logged as an error, the callback answers :attr:`Status.ERROR`, and the daemon disables
    the plugin until its file or ``NAME.conf`` changes, without the restarts an unexpected
    exception gets. The Rust SDK's ``Err(String)``."""


class ProtocolError(BaseException):
    """The daemon sent something this module cannot read (a frame over :data:`MAX_DOWN`, not
    JSON, cut short, or a message out of place). The process exits with status 4.

    A ``BaseException``, like ``SystemExit``: the channel is out of step, so nothing the
    strategy does can go on, and an ``except Exception`` in its code must not keep it going."""


class FrameTooLarge(ValueError):
    """A message to the daemon would be a frame over :data:`MAX_UP` bytes; nothing was sent
    (the daemon would end the plugin for it)."""


# Unicode White_Space, what Rust's `str::trim` strips (Python's `str.strip()` also strips
# U+001C..U+001F): the daemon and the SDK must read a NAME.conf line the same way.
_RUST_WHITESPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)


class Journal:
    """The fills a strategy has acted on, kept on disk, so that a fill the daemon hands it again
    after a crash (``replayed`` true) is told from a new one::

        def on_start(self, info):
            self.journal = Journal()          # journal.fills in the working directory

        def on_fill(self, fill):
            if fill.replayed and fill in self.journal:
                return                        # acted on before the crash: only acknowledge
            self.journal.add(fill)            # durable before acting: never act twice
            self.place(...)

    Keys are ``(symbol, trade_id)``: a trade id is unique within its symbol only. :meth:`add`
    returns once the key is on disk (written and fsynced). Adding before acting never acts
    twice (a crash between the two loses that action); adding after acting never misses one
    (a crash between repeats it). The file is in the strategy's working directory, which the
    daemon keeps across versions and restarts. Only the newest ``keep`` keys are kept: the
    daemon replays only fills after the last cursor it saved (at most about 100 ms of fills
    before a crash, or the one fill a crashed strategy was given), so a few thousand reach far
    enough back. A torn last line (a crash inside a write) is ignored when the file is read.
    """

    def __init__(self, path: str = "journal.fills", keep: int = 4096) -> None:
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self._path = path
        self._keep = keep
        self._order = collections.deque()  # type: collections.deque
        self._keys = set()  # type: set
        self._lines = 0
        whole = 0  # bytes up to the end of the last whole line
        try:
            with open(path, "rb") as f:
                for raw in f:
                    if not raw.endswith(b"\n"):
                        break  # torn by a crash inside its write
                    whole += len(raw)
                    self._lines += 1
                    key = self._parse(raw)
                    if key is not None:
                        self._remember(key)
        except FileNotFoundError:
            pass
        self._file = open(path, "ab")
        # The next line must not be glued to a torn one.
        if self._file.tell() > whole:
            self._file.truncate(whole)

    @staticmethod
    def _parse(raw: bytes) -> Optional[Tuple[str, int]]:
        parts = raw.split()
        if len(parts) != 2 or not parts[1].isdigit():
            return None
        return parts[0].decode("ascii", "replace"), int(parts[1])

    @staticmethod
    def _key(item: Any) -> Tuple[str, int]:
        if isinstance(item, Fill):
            return item.symbol, item.trade_id
        symbol, trade_id = item
        if not isinstance(symbol, str) or not symbol or any(c.isspace() for c in symbol):
            raise ValueError("a journal key's symbol is a non-empty str without spaces")
        if isinstance(trade_id, bool) or not isinstance(trade_id, int) or trade_id < 0:
            raise ValueError("a journal key's trade_id is a non-negative int")
        return symbol, trade_id

    def _remember(self, key: Tuple[str, int]) -> None:
        if key in self._keys:
            return
        self._keys.add(key)
        self._order.append(key)
        while len(self._order) > self._keep:
            self._keys.discard(self._order.popleft())

    def __contains__(self, item: Any) -> bool:
        """Whether a fill (or a ``(symbol, trade_id)``) was added, in this process or before."""
        return self._key(item) in self._keys

    def __len__(self) -> int:
        return len(self._order)

    def add(self, item: Any) -> None:
        """Records a fill (or a ``(symbol, trade_id)``) durably; nothing if it is there."""
        key = self._key(item)
        if key in self._keys:
            return
        self._file.write(("%s %d\n" % key).encode("ascii"))
        self._file.flush()
        os.fsync(self._file.fileno())
        self._lines += 1
        self._remember(key)
        if self._lines > 2 * self._keep:
            self._compact()

    def _compact(self) -> None:
        """Rewrites the file with the kept keys only (a new file renamed over it, then the
        folder synced), so that it does not grow for ever."""
        tmp = self._path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(b"".join(("%s %d\n" % k).encode("ascii") for k in self._order))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._path)
        folder = os.open(os.path.dirname(os.path.abspath(self._path)), os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
        self._file.close()
        self._file = open(self._path, "ab")
        self._lines = len(self._order)

    def close(self) -> None:
        """Closes the file (it is closed at exit anyway)."""
        self._file.close()


def setting(text: str, key: str) -> Optional[str]:
    """The value of ``key`` in a ``NAME.conf`` text, or ``None``.

    The first line ``key = value`` (``#`` starts a comment, anywhere on a line; key and value
    trimmed; only the first ``=`` splits, so a value may hold ``=``). Exactly the Rust SDK's
    ``setting``, which the daemon itself reads the file with: the plugin and its host never
    disagree on what a line says."""
    for line in text.split("\n"):
        if line.endswith("\r"):
            line = line[:-1]
        line = line.split("#", 1)[0]
        k, eq, v = line.partition("=")
        if eq and k.strip(_RUST_WHITESPACE) == key:
            return v.strip(_RUST_WHITESPACE)
    return None


def _dec(text: Any) -> Decimal:
    """A decimal string from the daemon, exact."""
    if not isinstance(text, str):
        raise ProtocolError("a decimal as %r, not a string" % (text,))
    try:
        return Decimal(text)
    except decimal.InvalidOperation:
        raise ProtocolError("not a decimal: %r" % (text,)) from None


def _dec_or_none(text: Any) -> Optional[Decimal]:
    """A decimal string that may be empty (an update's price of a cancel): ``None`` then."""
    if text in ("", None):
        return None
    return _dec(text)


def _wire_decimal(name: str, value: Any) -> str:
    """``value`` as the exact decimal text sent to the daemon; floats refused.

    ``Decimal``, ``int`` and decimal ``str`` pass; ``float`` (inexact: ``0.1`` is
    0.1000000000000000055511151231257827...), ``bool`` and anything else raise
    :class:`TypeError`, a non-finite value :class:`ValueError`. Plain notation always
    (``0.00000001``, never ``1E-8``)."""
    if isinstance(value, bool) or isinstance(value, float):
        raise TypeError(
            "%s must be a decimal.Decimal, int or decimal str, not %s %r: floats are inexact"
            % (name, type(value).__name__, value)
        )
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        try:
            d = Decimal(value.strip())
        except decimal.InvalidOperation:
            raise ValueError("%s: not a decimal: %r" % (name, value)) from None
    elif isinstance(value, Decimal):
        d = value
    else:
        raise TypeError("%s must be a decimal.Decimal, int or decimal str, not %s" % (name, type(value).__name__))
    if not d.is_finite():
        raise ValueError("%s: %s is not a price or quantity" % (name, d))
    return format(d, "f")


@dataclasses.dataclass(frozen=True)
class StartInfo:
    """What :meth:`Strategy.on_start` is given.

    ``settings`` is ``NAME.conf`` as written (read it with :meth:`Strategy.setting`);
    ``snapshot`` the daemon's JSON, parsed (numbers as ``Decimal``): ``symbols`` (each
    symbol's exchangeInfo rules), ``balances``, ``open_orders`` (this strategy's), ``tag`` (the
    ``sd-TAG-`` of its client order ids)."""

    name: str
    settings: str
    snapshot: Dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Fill:
    """One fill on the account, in the fill log's order.

    ``replayed``: it may have reached the strategy before (a crash came between it and its
    acknowledgement). ``own``: this daemon placed the order (any of its strategies; tell yours
    by the ``sd-TAG-`` prefix of ``client_order_id``); decided by the daemon, which knows its
    instance: do not guess it from the client id."""

    seq: int
    trade_id: int
    order_id: int
    time_ms: int
    symbol: str
    client_order_id: str
    side: Side
    price: Decimal
    qty: Decimal
    quote_qty: Decimal
    commission: Decimal
    commission_asset: str
    maker: bool
    replayed: bool
    own: bool


@dataclasses.dataclass(frozen=True)
class OrderUpdate:
    """What became of an intent (``request`` is the id its host method returned), or with
    ``kind == UpdateKind.REPORT`` and request 0 the stream's report of one of the strategy's
    orders. ``status`` and ``reason`` say it in words for people; act on ``kind`` and
    ``reason_code``. ``price`` and ``qty`` are ``None`` where the update has none (a cancel).
    ``resolved``: the second update of an ``UNKNOWN``."""

    request: int
    kind: UpdateKind
    order_id: int
    code: int
    symbol: str
    client_order_id: str
    side: Side
    price: Optional[Decimal]
    qty: Optional[Decimal]
    status: str
    reason: str
    reason_code: Reason
    resolved: bool


@dataclasses.dataclass(frozen=True)
class Price:
    """A symbol's best bid and ask, at each tick (``on_price``)."""

    symbol: str
    bid: Decimal
    ask: Decimal


@dataclasses.dataclass(frozen=True)
class Balance:
    """An asset's balance as it changes (``on_balance``)."""

    asset: str
    free: Decimal
    locked: Decimal


@dataclasses.dataclass(frozen=True)
class Book:
    """A symbol's order book after a change (``on_book``): its best ``book_depth`` levels each
    side (``NAME.conf``, default 5, at most 20), best first, as ``(price, qty)``.

    A symbol's books come in increasing ``update_id``; a strategy still busy with earlier
    callbacks gets only the newest, and ``skipped`` counts the books of this symbol it did not
    get since the previous one. ``event_time_ms`` is the exchange's event time (0 unknown),
    ``received_ms`` when the daemon read it."""

    symbol: str
    update_id: int
    event_time_ms: int
    received_ms: int
    skipped: int
    bids: List[Tuple[Decimal, Decimal]]
    asks: List[Tuple[Decimal, Decimal]]

    def touch(self) -> Optional[Tuple[Decimal, Decimal]]:
        """The best bid and ask prices, when both sides have a level."""
        if not self.bids or not self.asks:
            return None
        return self.bids[0][0], self.asks[0][0]


@dataclasses.dataclass(frozen=True)
class Trade:
    """One public trade of a symbol, anyone's (``on_trade``), in the exchange's order.

    ``buyer_maker``: the buyer was the maker (the taker sold). ``dropped``: trades (of any
    symbol) that left a full queue (1024 per plugin) just before this one."""

    symbol: str
    trade_id: int
    price: Decimal
    qty: Decimal
    time_ms: int
    event_time_ms: int
    received_ms: int
    buyer_maker: bool
    dropped: int


def _json_load(body: bytes) -> Any:
    # Numbers with a fraction become Decimal: nothing from the daemon is ever read as a float.
    return json.loads(body.decode("utf-8"), parse_float=Decimal)


class _Channel:
    """The protocol descriptors: frames in on ``fd_in``, out on ``fd_out``."""

    def __init__(self, fd_in: int, fd_out: int) -> None:
        self._in = os.fdopen(fd_in, "rb", buffering=65536, closefd=False)
        self._fd_out = fd_out

    def read(self) -> Optional[Dict[str, Any]]:
        """The next frame, parsed; ``None`` at a clean end of stream (between frames)."""
        head = self._in.read(4)
        if not head:
            return None
        if len(head) < 4:
            raise ProtocolError("the channel ended inside a frame's length")
        (length,) = struct.unpack(">I", head)
        if length > MAX_DOWN:
            raise ProtocolError("a frame of %d bytes announced, over the %d allowed" % (length, MAX_DOWN))
        body = self._in.read(length)
        if len(body) < length:
            raise ProtocolError("the channel ended inside a frame (%d of %d bytes)" % (len(body), length))
        try:
            msg = _json_load(body)
        except ValueError as e:  # JSONDecodeError and UnicodeDecodeError both
            raise ProtocolError("a malformed frame: %s" % e) from None
        if not isinstance(msg, dict):
            raise ProtocolError("a frame that is not a JSON object")
        return msg

    def write(self, msg: Dict[str, Any]) -> None:
        """Sends ``msg`` as one frame; over :data:`MAX_UP` it raises :class:`FrameTooLarge` and
        nothing is written. A daemon that hung up ends the process with status 0: it is done
        with this version, as at the end of the stream."""
        body = json.dumps(msg, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        if len(body) > MAX_UP:
            raise FrameTooLarge("a frame of %d bytes, over the %d allowed" % (len(body), MAX_UP))
        view = memoryview(struct.pack(">I", len(body)) + body)
        try:
            while view:
                view = view[os.write(self._fd_out, view):]
        except (BrokenPipeError, ConnectionResetError):
            raise SystemExit(0) from None


class Logger:
    """Logging through the daemon (``self.log`` of a strategy): each line lands in the
    daemon's log under the plugin's name, at its level. Messages are cut to :data:`MAX_LOG`
    bytes. Outside a callback (the daemon does not listen then) a line goes to stderr, which
    the daemon logs too."""

    def __init__(self, host: "_Host") -> None:
        self._host = host

    def log(self, level: int, msg: str) -> None:
        """Logs ``msg`` at ``level`` (a :class:`LogLevel`)."""
        self._host.log(int(level), str(msg))

    def error(self, msg: str) -> None:
        """Logs at error level."""
        self.log(LogLevel.ERROR, msg)

    def warn(self, msg: str) -> None:
        """Logs at warning level."""
        self.log(LogLevel.WARN, msg)

    #: ``logging``-style spelling of :meth:`warn`.
    warning = warn

    def info(self, msg: str) -> None:
        """Logs at info level."""
        self.log(LogLevel.INFO, msg)

    def debug(self, msg: str) -> None:
        """Logs at debug level."""
        self.log(LogLevel.DEBUG, msg)


class _Host:
    """The daemon as a strategy sees it: synchronous requests inside a call."""

    def __init__(self, chan: Optional[_Channel]) -> None:
        self.chan = chan
        self.in_call = False
        self.thread = threading.get_ident()

    def _check(self, what: str) -> _Channel:
        if self.chan is None or not self.in_call:
            raise RuntimeError("%s outside a callback: the daemon listens only while one runs" % what)
        if threading.get_ident() != self.thread:
            raise RuntimeError("%s from another thread: only the main thread may speak to the daemon" % what)
        return self.chan

    def request(self, what: str, msg: Dict[str, Any], answer: str) -> Dict[str, Any]:
        chan = self._check(what)
        chan.write(msg)
        reply = chan.read()
        if reply is None:
            raise SystemExit(0)  # the daemon hung up mid-call: it is done with us
        if reply.get("t") != answer:
            raise ProtocolError("%r answered by %r" % (msg.get("t"), reply.get("t")))
        return reply

    def submit(
        self,
        kind: IntentKind,
        symbol: str,
        side: int = 0,
        price: str = "",
        qty: str = "",
        order_id: Optional[int] = None,
        client_order_id: Optional[str] = None,
    ) -> int:
        if not isinstance(symbol, str) or not symbol:
            raise ValueError("symbol must be a non-empty str")
        oid = 0 if order_id is None else order_id
        if isinstance(oid, bool) or not isinstance(oid, int) or oid < 0:
            raise TypeError("order_id must be a non-negative int")
        cid = "" if client_order_id is None else client_order_id
        if not isinstance(cid, str):
            raise TypeError("client_order_id must be a str")
        msg = {
            "t": "intent",
            "kind": int(kind),
            "side": int(side),
            "order_id": oid,
            "symbol": symbol,
            "price": price,
            "qty": qty,
            "client_order_id": cid,
        }
        reply = self.request(IntentKind(kind).name.lower(), msg, "submitted")
        status = reply.get("status")
        if status == Status.OK:
            request = reply.get("request")
            if not isinstance(request, int):
                raise ProtocolError("submitted without a request id: %r" % (reply,))
            return request
        if not isinstance(status, int):
            raise ProtocolError("submitted without a status: %r" % (reply,))
        raise Refused(status)

    def rules(self, symbol: str) -> Optional[Dict[str, Any]]:
        reply = self.request("rules", {"t": "rules_of", "symbol": symbol}, "rules")
        text = reply.get("json")
        if text is None:
            return None
        if not isinstance(text, str):
            raise ProtocolError("rules as %r, not JSON text" % (type(text).__name__,))
        try:
            return _json_load(text.encode("utf-8"))
        except ValueError as e:
            raise ProtocolError("rules of %s are not JSON: %s" % (symbol, e)) from None

    def log(self, level: int, msg: str) -> None:
        # Cut on a character boundary: 'ignore' drops only a character the cut split.
        msg = msg.encode("utf-8")[:MAX_LOG].decode("utf-8", "ignore")
        if (
            self.chan is None
            or not self.in_call
            or threading.get_ident() != self.thread
        ):
            try:
                name = LogLevel(level).name
            except ValueError:
                name = str(level)
            sys.stderr.write("%s %s\n" % (name, msg))
            sys.stderr.flush()
            return
        self.chan.write({"t": "log", "level": level, "msg": msg})


class Strategy:
    """Subclass this and pass the class to :func:`run`.

    Override the callbacks you need; each runs on the main thread, one at a time, in the
    daemon's order, and must return promptly (a callback running over the daemon's stall
    limit gets the process killed). The daemon sends books only to a class that overrides
    :meth:`on_book` and public trades only to one that overrides :meth:`on_trade`: the rest
    cost nothing.

    Set up state in :meth:`on_start` rather than ``__init__`` (which runs before the daemon is
    reachable: no host method works there). Attributes the SDK provides: ``name``,
    ``settings`` (``NAME.conf`` text), ``snapshot`` (parsed) and ``log`` (a :class:`Logger`).
    """

    #: Sent to the daemon in the handshake; shown in its status and logs.
    VERSION = "0"

    # Set by `run` before `__init__` runs, so a subclass need not call `super().__init__()`.
    _host = None  # type: _Host
    log = None  # type: Logger
    name = ""
    settings = ""
    snapshot = {}  # type: Dict[str, Any]

    # -- callbacks ---------------------------------------------------------------------------

    def on_start(self, info: StartInfo) -> None:
        """The strategy starts (after a swap, a restart or a settings change as well). Raise
        :class:`Disable` to refuse to run (bad settings)."""

    def on_fill(self, fill: Fill) -> None:
        """A fill on the account (anyone's: check ``fill.own`` and the client id's tag).
        Acknowledged when this returns; never again unless marked ``replayed``."""

    def on_order(self, update: OrderUpdate) -> None:
        """What became of an intent, or a stream report of one of the strategy's orders."""

    def on_price(self, price: Price) -> None:
        """A symbol's best bid and ask, at each tick."""

    def on_balance(self, balance: Balance) -> None:
        """An asset's balance changed."""

    def on_book(self, book: Book) -> None:
        """A symbol's book changed (only for a subclass that overrides this)."""

    def on_trade(self, trade: Trade) -> None:
        """A public trade (only for a subclass that overrides this)."""

    def on_tick(self, now_ms: int) -> None:
        """Every ``SYNCD_PLUGIN_TICK_S``; ``now_ms`` is the daemon's clock (ms since the
        epoch)."""

    def on_stop(self) -> None:
        """The strategy is being stopped (swap, removal, shutdown). Its open orders stay
        unless ``cancel_on_stop = true``. Not called when the daemon just closes the channel."""

    # -- host methods ------------------------------------------------------------------------

    def place(self, symbol: str, side: Side, price: Any, qty: Any) -> int:
        """A maker order (LIMIT_MAKER) at ``price`` for ``qty``; returns its request id, which
        the outcome's :class:`OrderUpdate` carries. The executor rounds it onto the symbol's
        grid and refuses one that would cross the book.

        ``price`` and ``qty``: ``Decimal``, ``int`` or decimal ``str``; a ``float`` raises
        :class:`TypeError`. Raises :class:`Refused` when the daemon did not queue it."""
        side = Side(side)
        return self._host.submit(
            IntentKind.PLACE, symbol, side, _wire_decimal("price", price), _wire_decimal("qty", qty)
        )

    def cancel(self, symbol: str, order_id: Optional[int] = None, client_order_id: Optional[str] = None) -> int:
        """Cancels one of the strategy's orders, by exchange ``order_id`` or by
        ``client_order_id``; returns the request id. Raises :class:`Refused`."""
        if not order_id and not client_order_id:
            raise ValueError("cancel needs an order_id or a client_order_id")
        return self._host.submit(IntentKind.CANCEL, symbol, order_id=order_id, client_order_id=client_order_id)

    def cancel_all(self, symbol: str) -> int:
        """Cancels every open order of the strategy on ``symbol``; returns the request id.
        Raises :class:`Refused`."""
        return self._host.submit(IntentKind.CANCEL_ALL, symbol)

    def replace(
        self,
        symbol: str,
        side: Side,
        price: Any,
        qty: Any,
        order_id: Optional[int] = None,
        client_order_id: Optional[str] = None,
    ) -> int:
        """Replaces one of its orders (by ``order_id`` or ``client_order_id``) by a new maker
        order in one request: nothing is placed unless the cancel worked. Returns the request
        id; decimals as for :meth:`place`. Raises :class:`Refused`."""
        if not order_id and not client_order_id:
            raise ValueError("replace needs an order_id or a client_order_id")
        side = Side(side)
        return self._host.submit(
            IntentKind.REPLACE,
            symbol,
            side,
            _wire_decimal("price", price),
            _wire_decimal("qty", qty),
            order_id=order_id,
            client_order_id=client_order_id,
        )

    def rules(self, symbol: str) -> Optional[Dict[str, Any]]:
        """The current exchange rules of ``symbol`` (its exchangeInfo object, parsed; numbers
        as ``Decimal``), or ``None`` for a symbol the daemon does not trade."""
        return self._host.rules(symbol)

    def setting(self, key: str, default: Optional[str] = None) -> Optional[str]:
        """The value of ``key`` in ``NAME.conf`` (see :func:`setting`), else ``default``."""
        value = setting(self.settings, key)
        return default if value is None else value


def _fill(c: Dict[str, Any]) -> Fill:
    return Fill(
        seq=int(c["seq"]),
        trade_id=int(c["trade_id"]),
        order_id=int(c["order_id"]),
        time_ms=int(c["time_ms"]),
        symbol=c["symbol"],
        client_order_id=c["client_order_id"],
        side=Side(c["side"]),
        price=_dec(c["price"]),
        qty=_dec(c["qty"]),
        quote_qty=_dec(c["quote_qty"]),
        commission=_dec(c["commission"]),
        commission_asset=c["commission_asset"],
        maker=bool(c["maker"]),
        replayed=bool(c["replayed"]),
        own=bool(c.get("own", False)),
    )


def _update(c: Dict[str, Any]) -> OrderUpdate:
    return OrderUpdate(
        request=int(c["request"]),
        kind=UpdateKind.from_code(int(c["kind"])),
        order_id=int(c["order_id"]),
        code=int(c["code"]),
        symbol=c["symbol"],
        client_order_id=c["client_order_id"],
        side=Side.SELL if c["side"] == Side.SELL else Side.BUY,
        price=_dec_or_none(c["price"]),
        qty=_dec_or_none(c["qty"]),
        status=c["status"],
        reason=c["reason"],
        reason_code=Reason.from_code(int(c.get("reason_code", 0))),
        resolved=bool(c["resolved"]),
    )


def _levels(levels: Any) -> List[Tuple[Decimal, Decimal]]:
    return [(_dec(p), _dec(q)) for p, q in levels]


def _book(c: Dict[str, Any]) -> Book:
    return Book(
        symbol=c["symbol"],
        update_id=int(c["update_id"]),
        event_time_ms=int(c["event_time_ms"]),
        received_ms=int(c["received_ms"]),
        skipped=int(c["skipped"]),
        bids=_levels(c["bids"]),
        asks=_levels(c["asks"]),
    )


def _trade(c: Dict[str, Any]) -> Trade:
    return Trade(
        symbol=c["symbol"],
        trade_id=int(c["trade_id"]),
        price=_dec(c["price"]),
        qty=_dec(c["qty"]),
        time_ms=int(c["time_ms"]),
        event_time_ms=int(c["event_time_ms"]),
        received_ms=int(c["received_ms"]),
        buyer_maker=bool(c["buyer_maker"]),
        dropped=int(c["dropped"]),
    )


def _start(c: Dict[str, Any]) -> StartInfo:
    snapshot = _json_load(c["snapshot"].encode("utf-8")) if c["snapshot"] else {}
    if not isinstance(snapshot, dict):
        raise ProtocolError("a start snapshot that is not a JSON object")
    return StartInfo(name=str(c["name"]), settings=str(c["settings"]), snapshot=snapshot)


def _on_start(s: Strategy, info: StartInfo) -> None:
    s.name, s.settings, s.snapshot = info.name, info.settings, info.snapshot
    s.on_start(info)


# Each call kind: how its argument is read from the message, and the callback it goes to.
# Reading and calling are apart so that an error in the daemon's message (a protocol error)
# is never confused with one in the strategy's code (a crash).
_CALLS = {
    "start": (_start, _on_start),
    "fill": (_fill, lambda s, a: s.on_fill(a)),
    "order": (_update, lambda s, a: s.on_order(a)),
    "price": (
        lambda c: Price(symbol=c["symbol"], bid=_dec(c["bid"]), ask=_dec(c["ask"])),
        lambda s, a: s.on_price(a),
    ),
    "balance": (
        lambda c: Balance(asset=c["asset"], free=_dec(c["free"]), locked=_dec(c["locked"])),
        lambda s, a: s.on_balance(a),
    ),
    "tick": (lambda c: int(c["now_ms"]), lambda s, a: s.on_tick(a)),
    "book": (_book, lambda s, a: s.on_book(a)),
    "trade": (_trade, lambda s, a: s.on_trade(a)),
    "stop": (lambda c: None, lambda s, a: s.on_stop()),
}  # type: Dict[str, Tuple[Callable[[Dict[str, Any]], Any], Callable[[Strategy, Any], None]]]


def _overrides(cls: Type[Strategy], method: str) -> bool:
    return getattr(cls, method) is not getattr(Strategy, method)


def _take_descriptors() -> Tuple[Optional[int], Optional[int]]:
    """Private duplicates of descriptors 0 and 1 (not inherited by child processes), then 1
    and ``sys.stdout`` pointed at stderr and 0 at ``/dev/null``. Left alone when stdin is a
    terminal (someone importing the module by hand); ``None`` where a descriptor is not open."""
    try:
        if os.isatty(0):
            return None, None
        fd_in, fd_out = os.dup(0), os.dup(1)
    except OSError:
        return None, None
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        pass
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    return fd_in, fd_out


# At import, before any of the strategy's own code (its module-level prints included) runs.
_FD_IN, _FD_OUT = _take_descriptors()


def _serve(cls: Type[Strategy], chan: _Channel) -> int:
    hello = chan.read()
    if hello is None:
        return 0
    if hello.get("t") != "hello":
        raise ProtocolError("the first frame is %r, not hello" % (hello.get("t"),))
    if hello.get("proto") != PROTO:
        why = "protocol %r asked, this SDK (binance_syncd %s) speaks %d" % (hello.get("proto"), __version__, PROTO)
        chan.write({"t": "refused", "why": why})
        sys.stderr.write("binance_syncd: %s\n" % why)
        return _EXIT_PROTOCOL
    host = _Host(chan)
    strategy = cls.__new__(cls)
    strategy._host = host
    strategy.log = Logger(host)
    strategy.name = str(hello.get("name", ""))
    strategy.__init__()
    chan.write(
        {
            "t": "ready",
            "proto": PROTO,
            "version": str(cls.VERSION),
            "abi_minor": ABI_MINOR,
            "books": _overrides(cls, "on_book"),
            "trades": _overrides(cls, "on_trade"),
        }
    )
    while True:
        msg = chan.read()
        if msg is None:
            return 0
        if msg.get("t") != "call" or not isinstance(msg.get("call"), dict):
            raise ProtocolError("expected a call, got %r" % (msg.get("t"),))
        call = msg["call"]
        kind = call.get("c")
        seq = int(call.get("seq", 0)) if kind == "fill" else 0
        entry = _CALLS.get(kind)
        status = Status.OK
        if entry is not None:
            read, callback = entry
            try:
                arg = read(call)
            except (KeyError, TypeError, ValueError, AttributeError) as e:
                raise ProtocolError("a %s call the SDK cannot read: %r" % (kind, e)) from None
            host.in_call = True
            try:
                callback(strategy, arg)
            except Disable as e:
                host.log(LogLevel.ERROR, str(e) or "disabled by the strategy")
                status = Status.ERROR
            finally:
                host.in_call = False
        # else: a call this SDK does not know (a newer daemon's) had no callback to run; it is
        # answered as done all the same.
        # Only now, the callback having returned: this is the fill's acknowledgement.
        chan.write({"t": "done", "status": int(status), "seq": seq})


def run(cls: Type[Strategy]) -> None:
    """Serves ``cls`` to the daemon until it closes the channel, then exits the process.

    Exit statuses: 0 when the daemon closed the channel (or hung up); 1, with the traceback on
    stderr, when an exception escaped a callback; 2 when not started by the daemon; 4 on a
    protocol error (the daemon sent something unreadable) or a protocol version refused.

    **Why an exception is not caught.** A callback that raised left the strategy in a state
    nobody can vouch for (half-updated dictionaries, an order placed and not recorded). The
    fill it was given is not acknowledged, so the daemon's cursor has not moved: the daemon
    logs the traceback (stderr), starts the strategy again from its last acknowledged fill
    and hands it that fill again marked ``replayed``, and after repeated crashes quarantines
    it. Swallowing the exception and acknowledging would lose the fill for good; answering
    an error would disable the strategy until its file changes. Raise :class:`Disable` for
    that on purpose.
    """
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise TypeError("run() takes a subclass of binance_syncd.Strategy")
    if _FD_IN is None or _FD_OUT is None:
        sys.stderr.write(
            "binance_syncd: this is a binance-syncd strategy plugin: the daemon runs it with its "
            "socket as stdin and stdout (install it in SYNCD_PLUGIN_DIR)\n"
        )
        sys.exit(_EXIT_USAGE)
    chan = _Channel(_FD_IN, _FD_OUT)
    try:
        code = _serve(cls, chan)
    except ProtocolError as e:
        sys.stderr.write("binance_syncd: protocol error: %s\n" % e)
        code = _EXIT_PROTOCOL
    sys.stderr.flush()
    sys.exit(code)
