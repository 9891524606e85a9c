#!/usr/bin/env python3
"""Load for scripts/bench-scale.sh: a loopback TCP server holding N established connections.

    scale_load.py N SECONDS

Listens on 127.0.0.1 (a free port), connects N clients to it from a child process, accepts
them all, prints `ready PORT PID` (PID: the server, which holds the accepted ends), then holds
the connections idle for at most SECONDS and exits. Clients close with SO_LINGER 0 (a reset),
so no TIME_WAIT sockets outlive a row and inflate the next one. Loopback only, bounded in
count (N) and time (SECONDS).
"""
import os
import socket
import struct
import sys
import time

LINGER_RESET = struct.pack("ii", 1, 0)


def main():
    count, seconds = int(sys.argv[1]), float(sys.argv[2])
    if count < 0 or count > 100_000 or seconds <= 0 or seconds > 3600:
        sys.exit("usage: scale_load.py N(0..100000) SECONDS(0..3600)")
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
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
            s.connect(("127.0.0.1", port))
            clients.append(s)
        while time.monotonic() < deadline and os.getppid() != 1:
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
    try:
        while time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        os.kill(child, 15)
        os.waitpid(child, 0)


if __name__ == "__main__":
    main()
