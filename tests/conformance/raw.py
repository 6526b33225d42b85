#!/usr/bin/env python3
"""A plugin written from docs/plugin-protocol.md alone (standard library, no SDK), for
`binance-syncd conformance` (tests/it/conformance.rs). With FAULT "none" it keeps every rule;
the tests install copies with FAULT set to one way of breaking the protocol each, and check
that the conformance run names it:

  wrong_seq     acknowledges a fill with the next seq
  stdout        prints a line to stdout (the protocol's descriptor) on the first fill
  no_refusal    answers ready to any protocol
  float_price   sends its price as a JSON number
  chatty        sends a log line after its done of a tick
  linger        does not exit at the end of its stdin
  busy_loop     submits again and again after BUSY within one call
  retry         sends a refused intent again, unchanged
  bad_level     logs at level 9
  deaf          never reads again after its start
  dup_key       answers a tick with a done that names seq twice
  zero_price    places at price 0
  minor2        declares abi_minor 2 and places four levels a tick (it never gets BUSY)
  forks         starts a `sleep` at its start (in its process group) and leaves it running
"""
import json
import struct
import subprocess
import sys
import time

FAULT = "@FAULT@"
IN = sys.stdin.buffer
OUT = sys.stdout.buffer


def read():
    head = IN.read(4)
    if len(head) < 4:
        return None
    (n,) = struct.unpack(">I", head)
    body = IN.read(n)
    if len(body) < n:
        return None
    return json.loads(body)


def write(msg):
    body = json.dumps(msg).encode()
    OUT.write(struct.pack(">I", len(body)) + body)
    OUT.flush()


def place(price="59000.00"):
    price = {"float_price": 59000.0, "zero_price": "0"}.get(FAULT, price)
    write({"t": "intent", "kind": 0, "side": 0, "order_id": 0, "symbol": "BTCUSD",
           "price": price, "qty": "0.001", "client_order_id": ""})
    return read()


def main():
    hello = read()
    if hello is None:
        return
    if hello.get("proto") != 1 and FAULT != "no_refusal":
        write({"t": "refused", "why": "speaks protocol 1 only"})
        return
    minor = 2 if FAULT == "minor2" else 5
    write({"t": "ready", "proto": 1, "version": "raw " + FAULT, "abi_minor": minor})
    while True:
        msg = read()
        if msg is None:
            break
        call = msg["call"]
        seq = call.get("seq", 0) if call["c"] == "fill" else 0
        if call["c"] == "start" and FAULT == "forks":
            child = subprocess.Popen(["sleep", "60"])
            sys.stderr.write("started pid %d\n" % child.pid)
            sys.stderr.flush()
        if call["c"] == "tick":
            answer = place()
            if FAULT == "minor2":
                for level in ("58990.00", "58980.00", "58970.00"):
                    place(level)
            if answer["status"] == -4 and FAULT == "busy_loop":
                for _ in range(50):
                    place()
            if answer["status"] == -3 and FAULT == "retry":
                place()
            if FAULT == "bad_level":
                write({"t": "log", "level": 9, "msg": "level nine"})
        if call["c"] == "fill":
            if FAULT == "stdout" and seq == 1:
                print("handling fill", seq)
                sys.stdout.flush()
            if FAULT == "wrong_seq":
                seq += 1
        if call["c"] == "tick" and FAULT == "dup_key":
            body = b'{"t": "done", "status": 0, "seq": 0, "seq": 0}'
            OUT.write(struct.pack(">I", len(body)) + body)
            OUT.flush()
            continue
        write({"t": "done", "status": 0, "seq": seq})
        if call["c"] == "start" and FAULT == "deaf":
            time.sleep(60)
        if call["c"] == "tick" and FAULT == "chatty":
            write({"t": "log", "level": 3, "msg": "tick handled"})
    if FAULT == "linger":
        time.sleep(60)


main()
