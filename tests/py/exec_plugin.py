#!/usr/bin/env python3
"""A program plugin for the integration tests (tests/it/exec_plugins.rs), standard library
only, speaking docs/plugin-protocol.md by hand (no SDK: this is what a third party writes).

Its NAME.conf (sent in `call start`) says what it does:
  record = PATH   append `start V`, `fill V SEQ REPLAYED`, `stop V` there
  mode = calm     (default) acknowledge everything
  mode = garbage  print a line to stdout (the protocol channel) on a fill
  mode = exit     sys.exit(3) on a fill
  mode = raise    raise in its fill handler (a traceback on stderr, exit status 1)
  mode = stall    stop reading on a fill
  env = PATH      write its environment, open descriptors, working directory and whether it
                  is dumpable there (JSON) at start
A fill is recorded before the mode acts on it.
"""
import ctypes
import json
import os
import struct
import sys
import time

VERSION = "@VERSION@"
IN = sys.stdin.buffer
OUT = sys.stdout.buffer


def read():
    head = IN.read(4)
    if len(head) < 4:
        sys.exit(0)  # the daemon closed the channel: done
    (n,) = struct.unpack(">I", head)
    body = IN.read(n)
    if len(body) < n:
        sys.exit(0)
    return json.loads(body)


def write(msg):
    body = json.dumps(msg).encode()
    OUT.write(struct.pack(">I", len(body)) + body)
    OUT.flush()


def settings_of(text):
    out = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        if "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def record(conf, line):
    path = conf.get("record")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


def on_fill(conf, fill):
    record(conf, "fill %s %d %d" % (VERSION, fill["seq"], 1 if fill["replayed"] else 0))
    mode = conf.get("mode", "calm")
    if mode == "garbage":
        sys.stdout.write("debug: got a fill\n")
        sys.stdout.flush()
        time.sleep(30)
    elif mode == "exit":
        sys.exit(3)
    elif mode == "raise":
        raise RuntimeError("boom in on_fill #%d" % fill["seq"])
    elif mode == "stall":
        time.sleep(3600)


def main():
    hello = read()
    if hello.get("t") != "hello" or hello.get("proto") != 1:
        write({"t": "refused", "why": "expected hello of protocol 1, got %r" % hello})
        return
    write({"t": "ready", "proto": 1, "version": VERSION, "abi_minor": 5, "books": False, "trades": False})
    conf = {}
    while True:
        msg = read()
        if msg.get("t") != "call":
            sys.exit("unexpected %r" % msg)
        call = msg["call"]
        c = call["c"]
        seq = 0
        if c == "start":
            conf = settings_of(call["settings"])
            if conf.get("env"):
                fds = {}
                for fd in os.listdir("/proc/self/fd"):
                    try:
                        fds[fd] = os.readlink("/proc/self/fd/" + fd)
                    except OSError:
                        pass  # the listing's own descriptor, closed since
                # PR_GET_DUMPABLE (3): execve set it back to 1 (docs/plugin-protocol.md).
                dumpable = ctypes.CDLL(None).prctl(3, 0, 0, 0, 0)
                state = {"environ": dict(os.environ), "fds": fds, "cwd": os.getcwd(), "dumpable": dumpable}
                with open(conf["env"], "w") as f:
                    json.dump(state, f)
            record(conf, "start " + VERSION)
        elif c == "fill":
            seq = call["seq"]
            on_fill(conf, call)
        elif c == "stop":
            record(conf, "stop " + VERSION)
        write({"t": "done", "status": 0, "seq": seq})


main()
