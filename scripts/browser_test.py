#!/usr/bin/env python3
"""Drives the dashboard in headless Chromium through chromedriver (W3C WebDriver over HTTP).

Standard library only. Started by scripts/browser-test.sh, which owns the agent and
chromedriver processes; this script only opens a browser session, checks the page and closes
the session. Every wait is bounded; any failure exits non-zero with a message saying what was
expected.
"""

import argparse
import base64
import http.server
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C web element key


class Failure(Exception):
    pass


class WebDriver:
    def __init__(self, url):
        self.url = url.rstrip("/")
        self.session = None

    def call(self, method, path, body=None, timeout=30):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method,
            headers={"Content-Type": "application/json; charset=utf-8"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.load(response).get("value")
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")
            try:
                value = json.loads(detail)["value"]
                detail = f"{value.get('error')}: {value.get('message', '').splitlines()[0]}"
            except (ValueError, KeyError, AttributeError, IndexError):
                pass
            raise Failure(f"WebDriver {method} {path}: HTTP {e.code}: {detail}") from None

    def s(self, method, path, body=None, timeout=30):
        return self.call(method, f"/session/{self.session}{path}", body, timeout)

    def start(self, binary, args):
        value = self.call("POST", "/session", {"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "timeouts": {"script": 10000, "pageLoad": 20000, "implicit": 0},
            "goog:chromeOptions": {"binary": binary, "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        }}}, timeout=60)
        self.session = value["sessionId"]
        return value["capabilities"]

    def quit(self):
        if self.session:
            try:
                self.call("DELETE", f"/session/{self.session}", timeout=20)
            finally:
                self.session = None

    def js(self, script, *args):
        return self.s("POST", "/execute/sync", {"script": script, "args": list(args)})

    def find(self, css):
        return self.s("POST", "/element", {"using": "css selector", "value": css})[ELEMENT]

    def click(self, css):
        self.s("POST", f"/element/{self.find(css)}/click", {})

    def type(self, css, text):
        element = self.find(css)
        self.s("POST", f"/element/{element}/clear", {})
        self.s("POST", f"/element/{element}/value", {"text": text})

    def screenshot(self, path):
        png = base64.b64decode(self.s("GET", "/screenshot"))
        with open(path, "wb") as f:
            f.write(png)

    def browser_log(self):
        try:
            return self.s("POST", "/se/log", {"type": "browser"}) or []
        except Failure:
            return []


def wait_for(driver, what, script, timeout, *args):
    """Polls `script` until it returns something truthy; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = driver.js(script, *args)
        if last:
            return last
        time.sleep(0.2)
    raise Failure(f"timed out after {timeout} s waiting for {what} (last value: {last!r})")


def step(message):
    print(f"  {time.monotonic() - START:5.1f} s  {message}", flush=True)


START = time.monotonic()


BROWSER_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
    "--disable-dev-shm-usage", "--window-size=1400,1000", "--force-device-scale-factor=1",
]


def run(driver, options):
    capabilities = driver.start(options.chromium, BROWSER_ARGS + [f"--user-data-dir={options.profile}"])
    step(f"browser {capabilities.get('browserName')} {capabilities.get('browserVersion')}")

    driver.s("POST", "/url", {"url": options.base + "/"})
    if options.read_token:
        # api.read_token is set: / answers a token prompt; the read token opens the dashboard
        # (a session cookie then carries the event stream, which cannot send Authorization).
        title = driver.s("GET", "/title")
        if "token needed" not in title:
            raise Failure(f"GET / without the read token has title {title!r}, expected the token prompt")
        step("the dashboard asked for the read token")
        driver.type("#token", options.read_token)
        driver.click("#login button[type=submit]")
        wait_for(driver, "the dashboard to load after the read token",
                 "return document.title === 'perfpilot';", 10)
        cookies = driver.s("GET", "/cookie")
        session = [c for c in cookies if c.get("name", "").startswith("perfpilot_session_")]
        if not session or not session[0].get("httpOnly"):
            raise Failure(f"expected an HttpOnly perfpilot_session_* cookie, got {cookies}")
    title = driver.s("GET", "/title")
    if title != "perfpilot":
        raise Failure(f"GET / has title {title!r}, expected 'perfpilot'")
    step("opened the dashboard")

    wait_for(driver, "the event stream to connect",
             "return document.getElementById('connection').dataset.state === 'live';", 20)
    step("event stream live")

    points = wait_for(
        driver, "the memory chart to have at least 5 points",
        "const n = Number(document.getElementById('chart-memory').dataset.points);"
        "return n >= 5 ? n : 0;", 20)
    step(f"memory chart has {points} points")
    cpu = driver.js("return Number(document.getElementById('chart-cpu').dataset.points);")
    if cpu < 1:
        raise Failure(f"the CPU chart has {cpu} points after the memory chart has {points}")

    button = '#strategies button[data-strategy="memory-purge"]'
    wait_for(driver, "the memory-purge button", "return !!document.querySelector(arguments[0]);",
             10, button)
    driver.click(button)
    step("clicked memory-purge")

    if options.token:
        # The agent has a token: the page must say so and ask for it in the header form.
        wait_for(driver, "the page to ask for the token after a 401",
                 "return document.getElementById('token-form').classList.contains('needed')"
                 " && document.getElementById('answer').textContent.startsWith('401');", 10)
        step("the page asked for the token (401)")
        driver.type("#token", options.token)
        driver.click("#token-form button[type=submit]")
        step("entered the token; the run is retried")

    row = '#runs tr[data-strategy="memory-purge"][data-success="true"]'
    wait_for(driver, "a successful memory-purge row in the runs table",
             "return !!document.querySelector(arguments[0]);", 15, row)
    step("the runs table shows memory-purge: success")
    wait_for(driver, "the answer box to show the memory-purge result",
             "const text = document.getElementById('answer').textContent;"
             "return text.includes('triggered successfully: memory-purge') && text;", 10)
    markers = wait_for(
        driver, "the run marked on the memory chart",
        "return Number(document.getElementById('chart-memory').dataset.markers);", 5)
    step(f"{markers} run marker(s) on the charts")
    if options.token:
        stored = driver.js("return sessionStorage.getItem('perfpilot.token');")
        if stored != options.token:
            raise Failure("the token was not kept in sessionStorage")

    errors = driver.js("return window.perfpilotDashboard.state.errors;")
    if errors:
        raise Failure(f"the page reported script errors: {errors}")
    # The expected network errors are the 401s that made the page ask for a token.
    severe = [e for e in driver.browser_log() if e.get("level") == "SEVERE"
              and " 401 " not in e.get("message", "")]
    if severe:
        raise Failure("browser console errors: " + "; ".join(e.get("message", "") for e in severe))

    # Zoom the time axis to the last minute and let a few more samples arrive, so the
    # screenshot shows lines rather than a sliver at the right edge; then fit the whole page.
    driver.js("const w = document.getElementById('window'); w.value = '60';"
              "w.dispatchEvent(new Event('change'));")
    time.sleep(2.5)
    fit_window(driver)
    driver.screenshot(options.screenshot)
    step(f"screenshot written to {options.screenshot}")

    if options.open_base:
        cross_origin_attack(driver, options)


# Counts the memory canvas's pixels of each drawn colour: the episode's shade (245,158,11 at
# about 12 % alpha over a transparent canvas), the goal line (#b7791f), the limit line (#d64545)
# and successful run markers (31,157,85 at 75 %).
CANVAS_PIXELS = """
const canvas = document.querySelector('#chart-memory canvas');
const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
const near = (i, r, g, b, lo, hi) => Math.abs(data[i] - r) <= 3 && Math.abs(data[i + 1] - g) <= 3
  && Math.abs(data[i + 2] - b) <= 3 && data[i + 3] >= lo && data[i + 3] <= hi;
const counts = {shade: 0, goal: 0, limit: 0, marker: 0};
for (let i = 0; i < data.length; i += 4) {
  if (near(i, 245, 158, 11, 20, 40)) counts.shade++;
  else if (near(i, 0xb7, 0x79, 0x1f, 250, 255)) counts.goal++;
  else if (near(i, 0xd6, 0x45, 0x45, 250, 255)) counts.limit++;
  else if (near(i, 31, 157, 85, 180, 200)) counts.marker++;
}
return counts;
"""

# The report's sections, each with what must be drawn in it (a CSS selector and how many).
REPORT_SECTIONS = ["summary", "budgets", "rungs", "strategies", "oom-kills", "exhaustions",
                   "reloads"]


def fit_window(driver):
    """Grows the window to the page's height (up to 4000 px) so a screenshot shows all of it."""
    height = 1000
    for _ in range(4):  # the viewport is smaller than the window, and layout moves with it
        missing = driver.js("return document.documentElement.scrollHeight - window.innerHeight;")
        if missing <= 0 or height >= 4000:
            break
        height = min(height + missing, 4000)
        driver.s("POST", "/window/rect", {"width": 1400, "height": height})
        time.sleep(0.3)


def episode(driver, options):
    """The dashboard and the report opened after a budget episode the page did not see live."""
    capabilities = driver.start(options.chromium, BROWSER_ARGS + [f"--user-data-dir={options.profile}"])
    step(f"browser {capabilities.get('browserName')} {capabilities.get('browserVersion')}")
    driver.s("POST", "/url", {"url": options.base + "/"})
    history = wait_for(driver, "the dashboard to load the recorded history",
                       "return document.body.dataset.history === 'loaded'"
                       " && window.perfpilotDashboard.state.history;", 20)
    step(f"history loaded: {history}")
    # The default 5 min window holds the whole run (the agent started at most 3 min ago).
    read_drawn = "return JSON.parse(document.getElementById('chart-memory').dataset.drawn || '{}');"
    try:
        drawn = wait_for(
            driver, "the memory chart to draw the rise (by 20 points of the limit, to at least"
            " 0.85 of the goal: the forecast may start the episode before the crossing), goal"
            " and limit, an episode and two runs", "const d = (() => {" + read_drawn + "})();"
            "const goal = 100 * arguments[0];"
            "return d.peak - d.low >= 20 && d.peak >= 0.85 * goal && d.guides >= 2"
            " && d.episodes >= 1 && d.markers >= 2 && d;", 15, options.goal)
    except Failure as e:
        raise Failure(f"{e}; the chart drew {driver.js(read_drawn)}") from None
    step(f"the memory chart drew {drawn}")
    pixels = driver.js(CANVAS_PIXELS)
    step(f"pixels on the memory canvas: {pixels}")
    for what, least in (("shade", 200), ("goal", 50), ("limit", 50), ("marker", 10)):
        if pixels.get(what, 0) < least:
            raise Failure(f"the memory canvas has {pixels.get(what, 0)} pixels of the {what}"
                          f" colour, expected at least {least}: {pixels}")
    errors = driver.js("return window.perfpilotDashboard.state.errors;")
    if errors:
        raise Failure(f"the page reported script errors: {errors}")
    fit_window(driver)
    driver.screenshot(options.screenshot)
    step(f"screenshot written to {options.screenshot}")

    check_report(driver, options.base + "/report?since=15m", "GET /report",
                 options.report_screenshot)


def report_file(driver, options):
    """The page `perfpilot report` wrote, opened as a file (no agent behind it)."""
    capabilities = driver.start(options.chromium, BROWSER_ARGS + [f"--user-data-dir={options.profile}"])
    step(f"browser {capabilities.get('browserName')} {capabilities.get('browserVersion')}")
    path = os.path.abspath(options.report_file)
    check_report(driver, "file://" + path, f"perfpilot report's {path}", options.screenshot)


def check_report(driver, url, what, screenshot):
    """Every section of a report laid out, and its memory chart drawn (episode, goal, limit,
    runs), with a screenshot."""
    driver.s("POST", "/window/rect", {"width": 1400, "height": 1000})
    driver.s("POST", "/url", {"url": url})
    title = driver.s("GET", "/title")
    if not title.startswith("perfpilot report"):
        raise Failure(f"{what} has title {title!r}, expected 'perfpilot report: ...'")
    report = driver.js("""
const box = (e) => { const r = e.getBoundingClientRect(); return r.width > 0 && r.height > 0; };
const sections = {};
for (const id of arguments[0]) {
  const s = document.getElementById(id);
  sections[id] = !!s && box(s) && !!s.querySelector('h2') && box(s.querySelector('h2'));
}
const chart = document.querySelector('#budgets .chart[data-signal="memory_usage"] svg');
// A line has no area: drawn means it spans some length.
const span = (e) => { const r = e.getBoundingClientRect(); return r.width + r.height > 0; };
const count = (css, drawn) => chart ? [...chart.querySelectorAll(css)].filter(drawn).length : 0;
const line = chart && chart.querySelector('polyline.signal');
const summary = document.getElementById('summary');
return {sections, chart: !!chart && box(chart), episodes: count('rect.episode', box),
  goals: count('line.goal', span), limits: count('line.limit', span), runs: count('line.run', span),
  points: line ? line.points.numberOfItems : 0,
  rungRows: document.querySelectorAll('#rungs tr').length - 1,
  strategyRows: document.querySelectorAll('#strategies tr').length - 1,
  summary: summary ? {...summary.dataset} : null};
""", REPORT_SECTIONS)
    step(f"{what}: {report}")
    missing = [s for s, ok in report["sections"].items() if not ok]
    if missing:
        raise Failure(f"{what} does not show the sections {missing}")
    expected = {"chart": True, "episodes": 1, "goals": 1, "limits": 1, "runs": 2, "points": 10,
                "rungRows": 2, "strategyRows": 2}
    short = {k: report[k] for k, least in expected.items() if report[k] < least}
    if short:
        raise Failure(f"the report's memory chart or tables lack drawn elements: {short}"
                      f" (expected at least {expected})")
    summary = report["summary"] or {}
    if int(summary.get("episodes", 0)) < 1 or int(summary.get("runs", 0)) < 2:
        raise Failure(f"the report's summary counts {summary}, expected an episode and two runs")
    fit_window(driver)
    driver.screenshot(screenshot)
    step(f"screenshot written to {screenshot}")


ATTACK_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>another site</title></head><body>
<p id="fetch">fetch: pending</p>
<form id="form" method="POST" enctype="text/plain" target="sink" action="AGENT/performance-optimize">
<input type="hidden" name='{"strategy": "memory", "x": "' value='"}'></form>
<iframe name="sink" id="sink"></iframe>
<script>
fetch("AGENT/performance-optimize", {
  method: "POST", headers: {"Content-Type": "text/plain"}, body: '{"strategy": "memory"}',
}).then((r) => { document.getElementById("fetch").textContent = "fetch: answered " + r.status; },
        (e) => { document.getElementById("fetch").textContent = "fetch: rejected " + e; });
document.getElementById("form").submit();
</script></body></html>
"""


def manual_runs(base):
    with urllib.request.urlopen(base + "/performance-metrics", timeout=5) as response:
        document = json.load(response)
    return [r for r in document.get("recentOptimizations", []) if r.get("kind") == "manual"]


def refusals(log_path, origin):
    with open(log_path, encoding="utf-8", errors="replace") as f:
        return [line for line in f if "refused: cross-origin request" in line and origin in line]


def cross_origin_attack(driver, options):
    """A page from another local port tries to run a strategy on an agent without a token."""
    agent = options.open_base

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = ATTACK_PAGE.replace("AGENT", agent).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        origin = f"http://127.0.0.1:{server.server_address[1]}"
        driver.s("POST", "/url", {"url": origin + "/"})
        step(f"opened a page of another origin ({origin}) that posts to {agent}")
        fetched = wait_for(driver, "the page's fetch POST to settle",
                           "const t = document.getElementById('fetch').textContent;"
                           "return !t.endsWith('pending') && t;", 10)
        step(f"the page's {fetched} (a cross-origin answer without CORS headers)")
        lines = wait_for_python("two refusals of the page's origin in the agent's log",
                                lambda: (lambda n: n if n >= 2 else 0)(len(refusals(options.open_log, origin))),
                                10)
        step(f"the agent refused the page's fetch and form POSTs ({lines} log lines)")
        driver.s("POST", "/frame", {"id": {ELEMENT: driver.find("#sink")}})
        framed = wait_for(driver, "the form's answer in the frame",
                          "return document.body && document.body.innerText;", 10)
        driver.s("POST", "/frame/parent", {})
        if "cross-origin request refused" not in framed:
            raise Failure(f"the form POST got {framed!r}, expected the 403 refusal")
        step("the form POST was answered 403: " + framed.strip()[:80] + "...")
        runs = manual_runs(agent)
        if runs:
            raise Failure(f"the cross-origin page ran strategies: {runs}")
        step("no run recorded")
        request = urllib.request.Request(agent + "/performance-optimize", method="POST",
                                         data=b'{"strategy": "memory"}')
        with urllib.request.urlopen(request, timeout=20) as response:
            if response.status != 200:
                raise Failure(f"a POST without Origin got {response.status}, expected 200")
        if len(manual_runs(agent)) != 1:
            raise Failure("a POST without Origin (curl-style) did not record a run")
        step("a curl-style POST without Origin still runs the strategy")
    finally:
        server.shutdown()
        server.server_close()


def wait_for_python(what, check, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    raise Failure(f"timed out after {timeout} s waiting for {what}")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--webdriver", required=True, help="chromedriver's URL")
    parser.add_argument("--base", default="", help="the agent's URL (http://ADDR)")
    parser.add_argument("--token", default="", help="the agent's api.token, if it has one")
    parser.add_argument("--read-token", default="", help="the agent's api.read_token, if any")
    parser.add_argument("--open-base", default="",
                        help="a second agent without a token, for the cross-origin page")
    parser.add_argument("--open-log", default="", help="that agent's stderr (debug log)")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--profile", required=True, help="a fresh --user-data-dir")
    parser.add_argument("--screenshot", required=True)
    parser.add_argument("--episode", action="store_true",
                        help="check the dashboard and GET /report after a budget episode")
    parser.add_argument("--report-screenshot", default="target/report.png")
    parser.add_argument("--report-file", default="",
                        help="check a report written by `perfpilot report` (opened as a file)")
    parser.add_argument("--goal", type=float, default=0.8, help="the memory budget's goal")
    options = parser.parse_args()

    driver = WebDriver(options.webdriver)
    try:
        if options.report_file:
            report_file(driver, options)
        else:
            (episode if options.episode else run)(driver, options)
    except (Failure, OSError) as e:
        print(f"browser test FAILED: {e}", file=sys.stderr)
        if driver.session:
            for entry in driver.browser_log():
                print(f"  console {entry.get('level')}: {entry.get('message')}", file=sys.stderr)
            try:
                failed = options.screenshot.replace(".png", "-failure.png")
                driver.screenshot(failed)
                print(f"  screenshot of the failure: {failed}", file=sys.stderr)
            except (Failure, OSError):
                pass
        return 1
    finally:
        try:
            driver.quit()
        except (Failure, OSError):
            pass
    print(f"browser test passed in {time.monotonic() - START:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
