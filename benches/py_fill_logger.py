"""The sync bench's yardstick: the same job as binance-syncd done by a small Python client.

It gets the listen key over REST, holds the user-data WebSocket with websocket-client, and
appends one JSON line per executionReport TRADE to a file (flushed, not fsynced), as a typical
hand-written bot would. No reconnects, no reconciliation: it is the floor, not a peer.

usage: py_fill_logger.py REST_URL WS_URL API_KEY OUT_FILE
"""
import json
import sys
import urllib.request

import websocket  # websocket-client


def main():
    rest, ws_url, key, out_path = sys.argv[1:5]
    req = urllib.request.Request(rest + "/api/v3/userDataStream", method="POST", headers={"X-MBX-APIKEY": key})
    listen_key = json.load(urllib.request.urlopen(req))["listenKey"]
    out = open(out_path, "a", buffering=1)
    ws = websocket.create_connection(ws_url + "/ws/" + listen_key)
    print("ready", flush=True)
    while True:
        msg = ws.recv()
        if not msg:
            continue
        ev = json.loads(msg)
        if ev.get("e") != "executionReport" or ev.get("x") != "TRADE":
            continue
        line = {
            "symbol": ev["s"], "trade_id": ev["t"], "order_id": ev["i"], "client_order_id": ev["c"],
            "side": ev["S"], "price": ev["L"], "qty": ev["l"], "quote_qty": ev["Y"],
            "commission": ev["n"], "commission_asset": ev["N"] or "", "maker": ev["m"], "time": ev["T"],
        }
        out.write(json.dumps(line, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main()
