"""Browser side of the web page benchmark (tests/src/bin/web_bench.rs).

Opens N pages (each its own browser context and login) on the agent's
overview in Debian's chromium, measures on the first one the time to the
first meaningful paint (navigation start to the first device's live values
drawn, session cookie already set) and the page weight (compressed bytes of
every file the page loads), prints `ready {json}`, then keeps the pages open
until its standard input closes.
"""

import json
import sys

from playwright.sync_api import sync_playwright

CFG = json.loads(sys.argv[1])
BASE = CFG["base"]

with sync_playwright() as p:
    browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
    pages = []
    for k in range(int(CFG["pages"])):
        ctx = browser.new_context(viewport={"width": 1366, "height": 768})
        page = ctx.new_page()
        page.goto(BASE + "/")
        page.fill("#login-user", CFG["user"])
        page.fill("#login-pass", CFG["password"])
        page.click("#login-submit")
        page.wait_for_selector(f"#device-{CFG['first_device']} td.num", timeout=60000)
        pages.append(page)
    first = pages[0]
    paints = []
    weights = []
    for _ in range(5):
        first.reload()
        ms = first.evaluate(
            """async (id) => {
                const sel = `#device-${id} td.num`;
                while (!document.querySelector(sel) || !document.querySelector(sel).textContent) {
                    await new Promise((r) => requestAnimationFrame(r));
                }
                return performance.now();
            }""",
            CFG["first_device"],
        )
        paints.append(ms)
        # Files only: the live stream never ends and the API's JSON is data.
        weights.append(first.evaluate(
            """() => {
                const nav = performance.getEntriesByType('navigation')[0];
                const files = performance.getEntriesByType('resource').filter((r) => r.name.includes('/ui/'));
                return {
                    compressed: nav.encodedBodySize + files.reduce((s, r) => s + r.encodedBodySize, 0),
                    decoded: nav.decodedBodySize + files.reduce((s, r) => s + r.decodedBodySize, 0),
                    files: files.length + 1,
                    fcp: (performance.getEntriesByType('paint').find((e) => e.name === 'first-contentful-paint') || {}).startTime,
                };
            }"""))
    paints.sort()
    print("ready " + json.dumps({"meaningful_paint_ms": paints, "weight": weights[-1]}), flush=True)
    sys.stdin.read()
    browser.close()
