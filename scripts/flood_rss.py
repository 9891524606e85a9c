#!/usr/bin/env python3
"""Floods a running agent's API with idle and half-sent connections and prints its RSS.

Started by scripts/flood-rss.sh, which owns the agent. Loopback only; every connect and
request has a 5 s timeout; the number of connections is capped.
"""

import argparse
import os
import socket
import sys
import time

HALF_SENT = b"GET /performance-metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "


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
            s = socket.create_connection((host, port), timeout=5)
            if i % 3 == 0:
                s.sendall(HALF_SENT)
            held.append(s)
        except OSError:
            failed += 1
        if (i + 1) % step == 0:
            row(f"opened {i + 1}", len(held))
    time.sleep(5)
    row("held 5 s", len(held))
    peak = max(r[2] for r in rows)
    for s in held:
        s.close()
    time.sleep(3)
    row("released", 0)
    peak = max(peak, rows[-1][2])
    print(f"\n{total} connections attempted ({failed} failed to connect); "
          f"peak RSS {peak:.1f} MiB, budget {options.budget_mib:g} MiB")
    if peak > options.budget_mib:
        problems.append(f"peak RSS {peak:.1f} MiB is over the budget of {options.budget_mib:g} MiB")
    if problems:
        print("FAILED: " + "; ".join(problems), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
