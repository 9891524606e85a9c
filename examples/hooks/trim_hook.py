#!/usr/bin/env python3
"""A minimal perfpilot webhook handler: trims a cache when the agent asks (docs/hooks.md).

Run with: python3 examples/hooks/trim_hook.py [--listen 127.0.0.1:8081]

It serves POST /admin/cache/trim, takes the fraction to drop from the JSON body the agent
sends (the `body` configured for the webhook), and reads why it is called from the
X-Perfpilot-* headers. X-Perfpilot-Run-Id is the same on every retry of one run: a run seen
before is answered again without trimming twice. It prints `listening on http://ADDR`, then
one JSON line per call. Python's standard library only.
"""

import argparse
import collections
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Run ids already handled, oldest first, with the answer given (bounded).
handled = collections.OrderedDict()
HANDLED_KEPT = 1000


def trim_cache(fraction):
    """Your service's own work goes here; this sketch only says what it would drop."""
    return {"trimmed": fraction}


class Hook(BaseHTTPRequestHandler):
    def do_POST(self):
        if self.path != "/admin/cache/trim":
            return self.answer(404, {"error": f"no hook at {self.path}"})
        try:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            fraction = float(body.get("fraction", 0.25))
        except (ValueError, TypeError, AttributeError) as e:
            # 4xx: the agent records the failure and does not retry.
            return self.answer(400, {"error": f"bad body: {e}"})
        why = {name: self.headers.get(f"X-Perfpilot-{name}") for name in
               ["Run-Id", "Strategy", "Kind", "Budget", "Rung", "Signal", "Value", "Level"]}
        run_id = why["Run-Id"]
        if run_id in handled:
            answer = dict(handled[run_id], duplicate=True)
        else:
            answer = trim_cache(fraction)
            if run_id:
                handled[run_id] = answer
                while len(handled) > HANDLED_KEPT:
                    handled.popitem(last=False)
        print(json.dumps({"headers": why, "body": body, "answer": answer}), flush=True)
        # 2xx: success; the answer's JSON goes into the agent's record of the run.
        self.answer(200, answer)

    def answer(self, status, document):
        data = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args):
        pass  # stdout carries one JSON line per call


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:8081", help="HOST:PORT (port 0: any free)")
    host, _, port = parser.parse_args().listen.rpartition(":")
    server = ThreadingHTTPServer((host, int(port)), Hook)
    print(f"listening on http://{host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
