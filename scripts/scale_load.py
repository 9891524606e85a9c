#!/usr/bin/env python3
"""Load for scripts/bench-scale.sh: a loopback TCP server holding N established connections.

    scale_load.py N SECONDS [CHURN]

Listens on 127.0.0.1 (a free port), connects N clients to it from a child process, accepts
them all, prints `ready PORT PID` (PID: the server, which holds the accepted ends), then holds
the connections idle for at most SECONDS and exits. With CHURN (per second, at most 1,000),
the child also opens and drops one more connection that often, so that the namespace's
connections change between the agent's samples (the server accepts and closes them).
Clients close with SO_LINGER 0 (a reset), so no TIME_WAIT sockets outlive a row and inflate
the next one. Loopback only, bounded in count (N), rate (CHURN) and time (SECONDS).
"""
import os
import socket
import struct
import sys
import time

LINGER_RESET = struct.pack("ii", 1, 0)


def client(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
    s.connect(("127.0.0.1", port))
    return s


def main():
    count, seconds = int(sys.argv[1]), float(sys.argv[2])
    churn = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    if not (0 <= count <= 100_000 and 0 < seconds <= 3600 and 0 <= churn <= 1000):
        sys.exit("usage: scale_load.py N(0..100000) SECONDS(0..3600) [CHURN(0..1000)]")
    deadline = time.monotonic() + seconds
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(4096)
    port = server.getsockname()[1]
    child = os.fork()
    if child == 0:
        server.close()
        clients = []
        for _ in range(count):
            if time.monotonic() > deadline:
                break
            clients.append(client(port))
        while time.monotonic() < deadline and os.getppid() != 1:
            if churn > 0:
                time.sleep(1.0 / churn)
                client(port).close()
            else:
                time.sleep(0.2)
        for s in clients:
            s.close()
        os._exit(0)
    accepted = []
    server.settimeout(max(1.0, deadline - time.monotonic()))
    while len(accepted) < count and time.monotonic() < deadline:
        conn, _ = server.accept()
        accepted.append(conn)
    print(f"ready {port} {os.getpid()} {len(accepted)}", flush=True)
    server.settimeout(0.2)
    try:
        while time.monotonic() < deadline:
            try:
                # A churned connection: accepted and closed at once.
                server.accept()[0].close()
            except socket.timeout:
                pass
    finally:
        os.kill(child, 15)
        os.waitpid(child, 0)


if __name__ == "__main__":
    main()
