"""The admin page in a real headless Chromium (Playwright, driving Debian's chromium): it loads without any asset
from elsewhere, refuses a wrong token, shows the models after the login, follows a switch live, shows an engine's
log, and leaves a screenshot. Prints one JSON object; exits 1 when a step fails.

Usage: admin_page.py ADMIN_URL TOKEN SCREENSHOT AWAKE_MODEL ASLEEP_MODEL
"""
import json
import sys

from playwright.sync_api import sync_playwright

admin, token, screenshot, awake, asleep = sys.argv[1:6]
result = {"steps": []}


def step(name, ok, **details):
    result["steps"].append({"step": name, "ok": bool(ok), **details})
    if not ok:
        raise AssertionError(f"{name}: {details}")


def state(page, model):
    return page.inner_text(f'#models tr[data-model="{model}"] td.state')


with sync_playwright() as playwright:
    browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    requests = []
    page.on("request", lambda request: requests.append(request.url))
    try:
        page.goto(admin + "/")
        page.wait_for_selector("#login", state="visible", timeout=10_000)
        step("the login form", True)
        page.fill("#token", "not-the-admin-token-0000")
        page.click("#login button[type=submit]")
        page.wait_for_selector("#login-error", state="visible", timeout=10_000)
        step("a wrong token is refused", page.is_visible("#login-error") and not page.is_visible("#main"))

        page.fill("#token", token)
        page.click("#login button[type=submit]")
        page.wait_for_selector(f'#models tr[data-model="{asleep}"]', timeout=10_000)
        before = {awake: state(page, awake), asleep: state(page, asleep)}
        step("the models after the login", before[awake] == "awake" and before[asleep] in ("L1", "L2"),
             states=before, gpus=page.inner_text("#gpus tbody"))

        page.select_option("#switch-to", asleep)
        page.select_option("#switch-from", awake)
        page.click("#switch")
        page.wait_for_function(
            """([model]) => {
                const cell = document.querySelector(`#models tr[data-model="${model}"] td.state`);
                return cell && cell.textContent === "awake"
                    && document.querySelector(`#events li[data-kind="wake"][data-model="${model}"]`);
            }""", arg=[asleep], timeout=20_000)
        step("a switch followed live", state(page, asleep) == "awake",
             events=page.inner_text("#events").splitlines()[:6])

        page.click(f'#models tr[data-model="{awake}"] button[data-action="log"]')
        page.wait_for_function("() => document.querySelector('#log').textContent.includes('listening on')",
                               timeout=10_000)
        step("an engine's log", "listening on" in page.inner_text("#log"))

        page.screenshot(path=screenshot, full_page=True)
        foreign = [url for url in requests if not url.startswith(admin)]
        step("nothing loaded from elsewhere", not foreign, foreign=foreign[:5], requests=len(requests))

        page.click("#logout")
        page.wait_for_selector("#login", state="visible", timeout=10_000)
        status = page.evaluate("async () => (await fetch('/admin/models')).status")
        step("logged out", status == 401, status=status)
        result["ok"] = True
    except Exception as error:  # the failing step is in the output
        result["ok"] = False
        result["error"] = str(error)
        try:
            page.screenshot(path=screenshot, full_page=True)
        except Exception:
            pass
    finally:
        browser.close()

print(json.dumps(result))
sys.exit(0 if result["ok"] else 1)
