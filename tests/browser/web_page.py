"""The agent's local web page in a real browser (issue #16).

Run by tests/tests/web_page.rs, which starts the real edge agent, an
instrument simulator (the SDM630 `meter-1`) and the PV rig simulator, and
passes their addresses as JSON in argv[1]. Playwright (PyPI) drives Debian's
chromium (/usr/bin/chromium): Playwright's own browser downloads are not used.

Prints one JSON line `{"ok": ..., "checks": [...], "timings": {...}}` at the
end; exits non-zero on the first failed check, with the reason on stderr.
Screenshots go to cfg["artifacts"].
"""

import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

from playwright.sync_api import sync_playwright, expect

CFG = json.loads(sys.argv[1])
BASE = CFG["base"]
ART = Path(CFG["artifacts"])
ART.mkdir(parents=True, exist_ok=True)
# Generous: the machine may be loaded by parallel builds.
WAIT_MS = int(CFG.get("wait_ms", 30000))
checks = []
timings = {}
# Pages open, for a screenshot of each when a check fails.
PAGES = {}


def check(name):
    checks.append(name)
    print(f"ok: {name}", file=sys.stderr, flush=True)


def control(command):
    """One command on the PV rig simulator's control port; its reply line."""
    host, port = CFG["rig_control"].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall((command + "\n").encode())
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    return buf.decode().strip()


def poll(what, f, timeout_s=WAIT_MS / 1000):
    deadline = time.time() + timeout_s
    last = None
    while time.time() < deadline:
        try:
            last = f()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - the reason is reported on timeout
            last = e
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}: {last!r}")


def login(page, user, password):
    page.goto(BASE + "/")
    page.fill("#login-user", user)
    page.fill("#login-pass", password)
    page.click("#login-submit")
    expect(page.locator("#who")).to_contain_text(user, timeout=WAIT_MS)


def watch(page, problems):
    """Every request stays on the gateway; no CSP violation, no script error."""
    def on_request(r):
        if not r.url.startswith(BASE) and not r.url.startswith("data:"):
            problems.append(f"request left the gateway: {r.url}")

    def on_console(m):
        if "Content Security Policy" in m.text or "Refused to" in m.text:
            problems.append(f"CSP violation: {m.text}")

    page.on("request", on_request)
    page.on("console", on_console)
    page.on("pageerror", lambda e: problems.append(f"script error: {e}"))


def axe(page, what):
    """axe-core injected into the page (through the DevTools protocol, which
    the page's CSP does not restrict); serious or critical violations fail."""
    page.evaluate(Path(CFG["axe"]).read_text())
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    bad = [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]
    minor = [f"{v['id']} ({v['impact']})" for v in result["violations"] if v["impact"] not in ("serious", "critical")]
    if minor:
        print(f"axe on {what}: minor: {minor}", file=sys.stderr)
    assert not bad, f"axe on {what}: {bad}"
    check(f"axe: no serious or critical violation on {what}")


def shots(page, name):
    for w, h in ((1366, 768), (1280, 800), (800, 1280)):
        page.set_viewport_size({"width": w, "height": h})
        time.sleep(1.2)
        page.screenshot(path=str(ART / f"{name}-{w}x{h}.png"))
    page.set_viewport_size({"width": 1366, "height": 768})


def run_state(page):
    return page.locator("h1 .badge").inner_text().strip()


def main():
    problems = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CFG.get("chromium", "/usr/bin/chromium"), args=["--no-sandbox"])
        ctx = browser.new_context(viewport={"width": 1366, "height": 768})
        page = ctx.new_page()
        PAGES["operator"] = page
        watch(page, problems)

        # Login, then the overview with every device, from the live stream.
        t0 = time.time()
        page.goto(BASE + "/")
        expect(page.locator("#login-user")).to_be_visible(timeout=WAIT_MS)
        timings["login_form_s"] = time.time() - t0
        paint = page.evaluate("() => (performance.getEntriesByType('paint').find(e => e.name === 'first-contentful-paint') || {}).startTime")
        timings["first_contentful_paint_ms"] = paint
        login(page, CFG["operator"][0], CFG["operator"][1])
        for dev in ("meter-1", "chamber", "daq", "supply", "bias", "hipot", "smu"):
            expect(page.locator(f"#device-{dev}")).to_have_attribute("data-state", "online", timeout=WAIT_MS)
        check("login as an operator; every device's card online")
        expect(page.locator("#banner-hub")).to_contain_text("Hub unreachable", timeout=WAIT_MS)
        expect(page.locator("#banner-hub")).to_contain_text("still recorded on the gateway")
        check("the page says the hub is unreachable and data is still recorded")

        # A register changed on the simulator shows on the page.
        cell = page.locator('#device-chamber tr[data-point="humidity_setpoint"] td.num')
        expect(cell).to_have_text("40", timeout=WAIT_MS)
        assert control("set chamber humidity_setpoint 55") == "ok"
        expect(cell).to_have_text("55", timeout=WAIT_MS)
        check("a value changed on the simulator changes on the page")
        axe(page, "the overview")
        shots(page, "overview")

        # A confirmed write from the device page reaches the simulator.
        page.goto(BASE + "/#/device/chamber")
        expect(page.locator('tr[data-point="temperature_setpoint"] button.write')).to_be_visible(timeout=WAIT_MS)
        page.fill("#w-temperature_setpoint", "31.5")
        page.click('tr[data-point="temperature_setpoint"] button.write')
        expect(page.locator("#confirm")).to_be_visible()
        expect(page.locator("#confirm-text")).to_contain_text("31.5")
        page.click("#confirm-cancel")
        expect(page.locator("#write-status")).to_have_text("Write cancelled.")
        page.click('tr[data-point="temperature_setpoint"] button.write')
        page.click("#confirm-ok")
        expect(page.locator("#write-status")).to_contain_text("Written", timeout=WAIT_MS)
        poll("the rig's chamber setpoint at 31.5",
             lambda: abs(json.loads(control("state"))["chamber"]["temperature_setpoint"] - 31.5) < 1e-6)
        check("a confirmed write from the page reaches the simulator (a cancelled one does not)")
        expect(page.locator("#device-chart")).to_be_visible()
        axe(page, "the device page")
        shots(page, "device")

        # Runs: a refused start shows the engine's reason; an STC run
        # completes with its IV curve and verdicts; a TC200 run progresses
        # and is aborted with confirmation.
        page.goto(BASE + "/#/runs")
        expect(page.locator("#run-protocol option")).not_to_have_count(0, timeout=WAIT_MS)
        axe(page, "the runs page")
        page.select_option("#run-protocol", "stc-power")
        page.fill("#run-sample", "sample:WEB-0001")
        page.fill("#param-tolerance_pct", "50")
        page.fill("#param-rated_pmax", "400")
        page.click("#run-start")
        page.click("#confirm-ok")
        expect(page.locator("#run-error")).to_contain_text("tolerance_pct", timeout=WAIT_MS)
        check("a start the engine refuses shows its reason")
        page.fill("#param-tolerance_pct", "")
        page.click("#run-start")
        page.click("#confirm-ok")
        page.wait_for_url("**/#/runs/*", timeout=WAIT_MS)
        expect(page.locator("h1 .badge")).to_have_text("completed", timeout=60000)
        expect(page.locator("#iv-chart")).to_be_visible()
        expect(page.locator("text=points").first).to_be_visible(timeout=WAIT_MS)
        assert page.locator("td >> text=pass").count() + page.locator(".badge.v-pass").count() > 0, "no passing verdict shown"
        check("an STC run from the page completes, with its IV curve and provisional verdicts")
        shots(page, "run-stc")

        page.goto(BASE + "/#/runs")
        expect(page.locator("#run-protocol option")).not_to_have_count(0, timeout=WAIT_MS)
        page.select_option("#run-protocol", "tc200")
        page.fill("#run-sample", "sample:WEB-0002")
        page.fill("#param-area_m2", "1.6")
        page.click("#run-start")
        page.click("#confirm-ok")
        page.wait_for_url("**/#/runs/*", timeout=WAIT_MS)
        run_id = page.url.rsplit("/", 1)[1]
        expect(page.locator("h1 .badge")).to_have_text("running", timeout=WAIT_MS)
        poll("the TC200 run to progress", lambda: float(page.locator("#run-progress").get_attribute("value") or 0) >= 3)
        expect(page.locator("#run-step")).to_contain_text("cycle", timeout=60000)
        time.sleep(3)
        check("a TC200 run starts and progresses (step, cycle) on the page")
        axe(page, "a run's page")
        shots(page, "run-tc200")
        page.click("#run-abort")
        page.fill("#confirm-input", "web page test")
        page.click("#confirm-ok")
        expect(page.locator("h1 .badge")).to_have_text("aborted", timeout=60000)
        expect(page.locator("#run-message")).to_contain_text("web page test")
        check("the run is aborted from the page after confirmation")

        # A viewer sees no write or run buttons, and forged requests are refused.
        vctx = browser.new_context(viewport={"width": 1280, "height": 800})
        vpage = vctx.new_page()
        PAGES["viewer"] = vpage
        watch(vpage, problems)
        login(vpage, CFG["viewer"][0], CFG["viewer"][1])
        vpage.goto(BASE + "/#/device/chamber")
        expect(vpage.locator('tr[data-point="temperature_setpoint"]')).to_be_visible(timeout=WAIT_MS)
        assert vpage.locator("button.write").count() == 0, "a viewer sees write buttons"
        vpage.goto(BASE + "/#/runs")
        expect(vpage.locator("table.runs")).to_be_visible(timeout=WAIT_MS)
        assert vpage.locator("#start-form").count() == 0, "a viewer sees the start form"
        vpage.goto(BASE + f"/#/runs/{run_id}")
        expect(vpage.locator("h1 .badge")).to_have_text("aborted", timeout=WAIT_MS)
        assert vpage.locator("#run-abort").count() == 0, "a viewer sees the abort button"
        check("a viewer sees no write, start or abort buttons")
        forged = """async ([path, withToken]) => {
            const s = await (await fetch('/api/v1/session')).json();
            const headers = {'Content-Type': 'application/json'};
            if (withToken) headers['X-CSRF-Token'] = s.csrf_token;
            const r = await fetch(path, {method: 'POST', headers, body: JSON.stringify({point: 'temperature_setpoint', value: 60})});
            const b = await r.json();
            return [r.status, b.error, b.message, s.user];
        }"""
        setpoint = json.loads(control("state"))["chamber"]["temperature_setpoint"]
        status = vpage.evaluate(forged, ["/api/v1/devices/chamber/write", True])
        assert status[:2] == [403, "forbidden"], f"viewer's write: {status}"
        status = page.evaluate(forged, ["/api/v1/devices/chamber/write", False])
        assert status[:2] == [403, "forbidden"] and "CSRF" in status[2], f"write without the CSRF token: {status}"
        after = json.loads(control("state"))["chamber"]["temperature_setpoint"]
        assert after == setpoint and after != 60, f"a forged write got through: {setpoint} -> {after}"
        check("a viewer's write and a write without the CSRF token are refused (403)")
        vctx.close()

        # A device going offline turns its card red within the poll timeout.
        page.goto(BASE + "/#/")
        expect(page.locator("#device-meter-1")).to_have_attribute("data-state", "online", timeout=WAIT_MS)
        t0 = time.time()
        os.kill(int(CFG["meter_sim_pid"]), signal.SIGKILL)
        expect(page.locator("#device-meter-1")).to_have_attribute("data-state", "offline", timeout=WAIT_MS)
        timings["offline_shown_s"] = time.time() - t0
        expect(page.locator("#device-meter-1 .badge")).to_have_text("offline")
        red = page.eval_on_selector("#device-meter-1", "e => getComputedStyle(e).borderLeftColor")
        assert red == "rgb(179, 38, 30)", f"offline card border {red}"
        check("a device going offline turns its card red")
        shots(page, "overview-offline")

        # The browser losing the gateway is said, and the page recovers: the
        # agent is frozen (SIGSTOP), so its connections hang as over a dead
        # link, then thawed.
        agent = int(CFG["agent_pid"])
        os.kill(agent, signal.SIGSTOP)
        try:
            expect(page.locator("#banner-gateway")).to_contain_text("Connection to the gateway lost", timeout=WAIT_MS)
            page.screenshot(path=str(ART / "gateway-lost-1366x768.png"))
        finally:
            os.kill(agent, signal.SIGCONT)
        expect(page.locator("#banner-gateway")).to_have_count(0, timeout=WAIT_MS)
        expect(page.locator("#device-chamber")).to_have_attribute("data-state", "online", timeout=WAIT_MS)
        check("the page says when the browser lost the gateway, and resumes")

        assert not problems, f"problems: {problems}"
        check("no request left the gateway; no CSP violation or script error")
        browser.close()
    print(json.dumps({"ok": True, "checks": checks, "timings": timings}), flush=True)


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - reported to the Rust test
        print(f"FAILED after {len(checks)} checks: {e}", file=sys.stderr, flush=True)
        for who, pg in PAGES.items():
            try:
                pg.screenshot(path=str(ART / f"failure-{who}.png"))
            except Exception:  # noqa: BLE001 - the browser may be gone
                pass
        print(json.dumps({"ok": False, "checks": checks, "timings": timings, "error": str(e)}), flush=True)
        sys.exit(1)
