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
"""
import json
import struct
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


def place():
    price = 59000.0 if FAULT == "float_price" else "59000.00"
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
    write({"t": "ready", "proto": 1, "version": "raw " + FAULT, "abi_minor": 5})
    while True:
        msg = read()
        if msg is None:
            break
        call = msg["call"]
        seq = call.get("seq", 0) if call["c"] == "fill" else 0
        if call["c"] == "tick":
            answer = place()
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
        write({"t": "done", "status": 0, "seq": seq})
        if call["c"] == "tick" and FAULT == "chatty":
            write({"t": "log", "level": 3, "msg": "tick handled"})
    if FAULT == "linger":
        time.sleep(60)


main()
