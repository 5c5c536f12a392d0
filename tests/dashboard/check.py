"""Drives the dashboard of a running weir in Debian's headless Chromium.

Usage: check.py URL TOKEN SCREENSHOT EXPECTED_JSON EXPIRING_HOST

Opens URL, enters TOKEN in the dashboard's token prompt, waits until every
cell in EXPECTED_JSON ({"host|service": "state"}) shows its state (as the
cell's class), then waits until EXPIRING_HOST's cells turn `expired`
without a reload, and writes a screenshot to SCREENSHOT. Prints what it
saw; exits non-zero on any mismatch.
"""

import json
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

url, token, screenshot, expected, expiring = sys.argv[1:6]
expected = json.loads(expected)

options = webdriver.ChromeOptions()
options.binary_location = "/usr/bin/chromium"
for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--window-size=1280,900"):
    options.add_argument(flag)
driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)


def cells():
    """host|service -> state of every cell on the page, read in one go
    (the page may rebuild its grid at any moment)."""
    return driver.execute_script("""
        const found = {};
        for (const cell of document.querySelectorAll("td.cell[data-host]")) {
            const state = [...cell.classList].find(c => c.startsWith("state-"));
            found[cell.dataset.host + "|" + cell.dataset.service] = state ? state.slice(6) : null;
        }
        return found;
    """)


def wait_for(what, check, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.2)
    driver.save_screenshot(screenshot)
    print("timed out waiting for", what, "; cells:", json.dumps(cells()), file=sys.stderr)
    sys.exit(1)


try:
    driver.get(url)
    wait_for("the token prompt", lambda: driver.find_element(By.ID, "login").is_displayed())
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "#token-form button").click()
    wait_for("every expected cell", lambda: all(cells().get(k) == v for k, v in expected.items()))
    print("cells:", json.dumps(cells(), sort_keys=True))
    uids = driver.execute_script(
        'return [...document.querySelectorAll("section.app")].map(s => s.dataset.uid)')
    print("applications:", json.dumps(uids))
    wait_for(expiring + " expired", lambda: all(
        state == "expired" for key, state in cells().items() if key.startswith(expiring + "|")
    ) and any(key.startswith(expiring + "|") for key in cells()), timeout=40)
    print("expired:", expiring)
    time.sleep(5)  # a few chart points
    driver.save_screenshot(screenshot)
    print("screenshot:", screenshot)
finally:
    driver.quit()
