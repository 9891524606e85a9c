#!/usr/bin/env python3
"""Floods a running agent's API and prints its RSS and /health latency.

Modes: `idle` (idle and half-sent connections), `large-heads` (400 KB header lines never
finished, over HTTP/1.1 and HTTP/2), `slow-bodies` (POST bodies announced and never sent,
from 30 loopback addresses). Started by scripts/flood-rss.sh, which owns the agent. Loopback
only; every connect and request has a 5 s timeout; the number of connections is capped.
"""

import argparse
import os
import socket
import sys
import time

HALF_SENT = b"GET /performance-metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
LARGE = 400 * 1024
LARGE_HTTP1 = b"GET /performance-metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * LARGE
SLOW_BODY = (b"POST /performance-optimize HTTP/1.1\r\nHost: 127.0.0.1\r\n"
             b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{")


def h2_frame(kind, flags, stream, payload):
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def hpack_int(first, bits, value):
    top = (1 << bits) - 1
    if value < top:
        return bytes([first | value])
    out = [first | top]
    value -= top
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    out.append(value)
    return bytes(out)


def large_http2():
    """h2c preface, SETTINGS, and a GET whose 400 KB header block never ends (HEADERS, then
    CONTINUATION frames of 16 KiB, no END_HEADERS)."""
    block = bytes([0x82, 0x86, 0x84]) + hpack_int(0, 4, 1) + hpack_int(0, 7, 9) + b"127.0.0.1"
    block += b"\x00" + hpack_int(0, 7, 5) + b"x-big" + hpack_int(0, 7, LARGE) + b"a" * LARGE
    out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + h2_frame(4, 0, 0, b"")
    for i in range(0, len(block), 16384):
        out += h2_frame(1 if i == 0 else 9, 0, 1, block[i:i + 16384])
    return out


LARGE_HTTP2 = large_http2()


def send_now(s, data):
    """Sends what the socket takes without blocking; the rest is never sent."""
    s.setblocking(False)
    try:
        s.send(data)
    except (BlockingIOError, OSError):
        pass


def open_one(mode, i, host, port):
    if mode == "slow-bodies":
        # 30 source addresses, 9 connections each (under a per-address rate limit).
        source = f"127.0.0.{2 + i % 30}"
        s = socket.create_connection((host, port), timeout=5, source_address=(source, 0))
        s.sendall(SLOW_BODY)
    else:
        s = socket.create_connection((host, port), timeout=5)
        if mode == "large-heads":
            send_now(s, LARGE_HTTP1 if i % 2 == 0 else LARGE_HTTP2)
        elif i % 3 == 0:
            s.sendall(HALF_SENT)
    return s


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def health_ms(host, port):
    started = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=5) as s:
            s.settimeout(5)
            s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            answer = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                answer += chunk
    except OSError as e:
        return None, f"failed: {e}"
    elapsed = (time.monotonic() - started) * 1000
    status = answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/") else "?"
    return elapsed, status


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--base", required=True)
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--budget-mib", type=float, default=16)
    parser.add_argument("--health-ms", type=float, default=100)
    parser.add_argument("--mode", choices=["idle", "large-heads", "slow-bodies"], default="idle")
    options = parser.parse_args()
    total = min(options.connections, 15000)
    host, port = options.base.removeprefix("http://").rsplit(":", 1)
    if host != "127.0.0.1":
        sys.exit(f"refusing a non-loopback agent: {options.base}")
    port = int(port)

    rows = []
    problems = []

    def row(phase, held):
        ms, status = health_ms(host, port)
        rss = rss_mib(options.pid)
        rows.append((phase, held, rss, fds(options.pid), ms, status))
        if status != "200":
            problems.append(f"{phase}: /health {status}")
        elif ms > options.health_ms:
            problems.append(f"{phase}: /health took {ms:.1f} ms (over {options.health_ms:g} ms)")
        print(f"{phase:<28} {held:>7} {rss:>9.1f} {fds(options.pid):>6} "
              f"{'-' if ms is None else f'{ms:.1f}':>10} {status:>7}", flush=True)

    print(f"{'phase':<28} {'held':>7} {'RSS MiB':>9} {'fds':>6} {'health ms':>10} {'status':>7}")
    time.sleep(2)
    row("idle", 0)
    held = []
    failed = 0
    step = max(total // 5, 1)
    for i in range(total):
        try:
            held.append(open_one(options.mode, i, host, port))
        except OSError:
            failed += 1
        if (i + 1) % step == 0:
            row(f"opened {i + 1}", len(held))
    for tick in range(10):
        time.sleep(0.5)
        row(f"held {0.5 * (tick + 1):.1f} s", len(held))
    peak = max(r[2] for r in rows)
    for s in held:
        s.close()
    time.sleep(3)
    row("released", 0)
    peak = max(peak, rows[-1][2])
    print(f"\n{options.mode}: {total} connections attempted ({failed} failed to connect); "
          f"peak RSS {peak:.1f} MiB, budget {options.budget_mib:g} MiB")
    if peak > options.budget_mib:
        problems.append(f"peak RSS {peak:.1f} MiB is over the budget of {options.budget_mib:g} MiB")
    if problems:
        print("FAILED: " + "; ".join(problems), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
