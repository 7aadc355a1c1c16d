"""The hub's verdict and certificate link on the gateway's run page (issue #16).

Run by tests/tests/hub_verdicts_edge.rs once the agent holds the hub's word
on a run (the hub may be down by then: the page shows what the agent kept).
argv[1] is JSON: base, operator [user, password], run, verdict,
certificate, url, chromium, artifacts. Playwright (PyPI) drives Debian's
chromium. Prints one JSON line `{"ok": ...}` at the end; exits non-zero on
a failed check, with the reason on stderr and a screenshot in artifacts.
"""

import json
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright, expect

CFG = json.loads(sys.argv[1])
BASE = CFG["base"]
ART = Path(CFG["artifacts"])
ART.mkdir(parents=True, exist_ok=True)
# Generous: the machine may be loaded by parallel builds.
WAIT_MS = 30000


def main():
    problems = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CFG["chromium"], args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        try:
            page.goto(BASE + "/")
            page.fill("#login-user", CFG["operator"][0])
            page.fill("#login-pass", CFG["operator"][1])
            page.click("#login-submit")
            expect(page.locator("#who")).to_contain_text(CFG["operator"][0], timeout=WAIT_MS)
            # From here on (the login screen's 401 is expected before it).
            page.on("console", lambda m: m.type == "error" and problems.append(m.text))
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(BASE + "/#/runs/" + CFG["run"])
            expect(page.locator("#hub-verdict")).to_contain_text(CFG["verdict"], timeout=WAIT_MS)
            link = page.locator("a#hub-certificate")
            expect(link).to_have_text(CFG["certificate"], timeout=WAIT_MS)
            expect(link).to_have_attribute("href", CFG["url"])
            # A plain link to the hub's page, opened apart from the gateway's.
            expect(link).to_have_attribute("rel", "noopener noreferrer")
            if problems:
                raise AssertionError(f"script errors or CSP violations: {problems}")
        except Exception:
            page.screenshot(path=str(ART / "hub-verdict.png"), full_page=True)
            raise
        finally:
            browser.close()
    print(json.dumps({"ok": True}))


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - reported to the Rust test
        print(f"FAILED: {e}", file=sys.stderr)
        print(json.dumps({"ok": False, "error": str(e)}))
        sys.exit(1)
