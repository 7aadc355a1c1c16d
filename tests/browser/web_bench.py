"""Browser side of the web page benchmark (tests/src/bin/web_bench.rs).

Opens one page per session cookie given (each its own browser context) on
the agent's overview in Debian's chromium, measures the time to the first
meaningful paint (navigation start to the first device's live values drawn,
logged in) on each first load (cold cache) and on 5 reloads of the first page
(warm), and the page weight (compressed bytes of every file the page loads,
first load), prints `ready {json}`, then keeps the pages open until its
standard input closes.
"""

import json
import sys

from playwright.sync_api import sync_playwright

CFG = json.loads(sys.argv[1])
BASE = CFG["base"]

PAINTED = """async (id) => {
    const sel = `#device-${id} td.num`;
    while (!document.querySelector(sel) || !document.querySelector(sel).textContent) {
        await new Promise((r) => requestAnimationFrame(r));
    }
    return performance.now();
}"""

# Files only: the live stream never ends and the API's JSON is data.
WEIGHT = """() => {
    const nav = performance.getEntriesByType('navigation')[0];
    const files = performance.getEntriesByType('resource').filter((r) => r.name.includes('/ui/'));
    return {
        compressed: nav.encodedBodySize + files.reduce((s, r) => s + r.encodedBodySize, 0),
        decoded: nav.decodedBodySize + files.reduce((s, r) => s + r.decodedBodySize, 0),
        files: files.length + 1,
        fcp_ms: (performance.getEntriesByType('paint').find((e) => e.name === 'first-contentful-paint') || {}).startTime,
    };
}"""

with sync_playwright() as p:
    browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
    pages = []
    cold = []
    weights = []
    # Each page its own context (no shared cache) and its own session, made
    # by the benchmark before its baseline (a login's argon2 costs memory of
    # its own, which is not the page's).
    for cookie in CFG["cookies"]:
        ctx = browser.new_context(viewport={"width": 1366, "height": 768})
        name, value = cookie.split("=", 1)
        ctx.add_cookies([{"name": name, "value": value, "url": BASE}])
        page = ctx.new_page()
        page.goto(BASE + "/")
        cold.append(page.evaluate(PAINTED, CFG["first_device"]))
        weights.append(page.evaluate(WEIGHT))
        pages.append(page)
    warm = []
    for _ in range(5):
        pages[0].reload()
        warm.append(pages[0].evaluate(PAINTED, CFG["first_device"]))
    report = {"meaningful_paint_cold_ms": sorted(cold), "meaningful_paint_warm_ms": sorted(warm), "weight": weights[0]}
    print("ready " + json.dumps(report), flush=True)
    sys.stdin.read()
    browser.close()
