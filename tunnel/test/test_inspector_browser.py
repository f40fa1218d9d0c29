"""
The client's inspector in a real browser: Debian's headless Chromium,
driven by Selenium, watches requests through a real tunnel appear on the
page without a reload, opens one, presses Replay, and sees the replay; the
local service receives it. Screenshots go to the test's directory, or to
C{$TUNNEL_SCREENSHOTS} (which is how C{doc/images/} is made).
"""

from __future__ import annotations

import os

from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from twisted.internet import defer
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tunnel.test.test_demo_browser import MINIMUM_SCREENSHOT, missingBrowser, startBrowser
from tunnel.test.test_e2e_inspector import InspectedTunnelMixin


def rows(driver) -> list[dict]:
    """The list's rows, as the page shows them."""
    return driver.execute_script(
        "return [...document.querySelectorAll('tr.exchange')].map(row => ({"
        "id: Number(row.dataset.id), text: row.innerText}));"
    )


def waitForRow(driver, words: str) -> dict:
    """Wait until a row shows C{words}; return it."""
    found: list[dict] = []

    def shown(driver) -> bool:
        found[:] = [row for row in rows(driver) if words in row["text"]]
        return bool(found)

    WebDriverWait(driver, 30, poll_frequency=0.1).until(shown)
    return found[0]


class InspectorBrowserTests(InspectedTunnelMixin, TestCase):
    """The inspector's page, as a browser shows it."""

    skip = missingBrowser()
    timeout = 120

    def screenshotDirectory(self) -> str:
        directory = os.environ.get("TUNNEL_SCREENSHOTS") or self.mktemp()
        os.makedirs(directory, exist_ok=True)
        return directory

    def assertScreenshot(self, path: str) -> None:
        with open(path, "rb") as f:
            png = f.read()
        self.assertEqual(png[:8], b"\x89PNG\r\n\x1a\n")
        self.assertGreater(len(png), MINIMUM_SCREENSHOT)

    @defer.inlineCallbacks
    def test_liveListDetailAndReplay(self):
        """
        Requests appear as they happen, the page never reloaded; a row opens
        its detail with the pretty-printed body; Replay sends the request to
        the local service again and the replay appears, marked so.
        """
        tunnel = yield self.startTunnel()
        driver = yield deferToThread(startBrowser)
        self.addCleanup(deferToThread, driver.quit)

        def openPage() -> None:
            driver.set_window_size(1400, 860)
            driver.get(tunnel.inspector)
            driver.execute_script("window.loadedOnce = true;")
            WebDriverWait(driver, 30, poll_frequency=0.1).until(
                lambda d: d.find_element(By.ID, "status").get_attribute("data-state") == "connected"
            )

        yield deferToThread(openPage)
        for path in ("/", "/products?page=2", "/missing"):
            response = yield tunnel.get(path)
            yield response.content()
        response = yield tunnel.post("/orders", b'{"item":"lamp","quantity":2}', "application/json")
        yield response.content()
        order = yield deferToThread(waitForRow, driver, "/orders")
        shots = self.screenshotDirectory()
        listScreenshot = os.path.join(shots, "inspector-list.png")
        replayScreenshot = os.path.join(shots, "inspector-replay.png")

        def openAndReplay() -> dict:
            driver.find_element(By.CSS_SELECTOR, f'tr.exchange[data-id="{order["id"]}"]').click()
            WebDriverWait(driver, 30, poll_frequency=0.1).until(
                lambda d: "lamp" in d.find_element(By.ID, "detail-body").text
            )
            body = driver.find_element(By.CSS_SELECTOR, "#detail-body pre.body").text
            driver.save_screenshot(listScreenshot)
            driver.find_element(By.ID, "replay").click()
            replay = waitForRow(driver, f"replay of #{order['id']}")
            WebDriverWait(driver, 30, poll_frequency=0.1).until(
                lambda d: d.find_element(By.ID, "detail-title").text == "POST /orders"
                and "Replay of" in d.find_element(By.ID, "detail-meta").text
            )
            driver.find_element(By.CSS_SELECTOR, '.tab[data-tab="response"]').click()
            driver.save_screenshot(replayScreenshot)
            return {
                "body": body,
                "replay": replay,
                "reloaded": driver.execute_script("return window.loadedOnce !== true;"),
                "rows": rows(driver),
            }

        shown = yield deferToThread(openAndReplay)
        self.assertEqual(shown["body"], '{\n  "item": "lamp",\n  "quantity": 2\n}')
        self.assertIn("200", shown["replay"]["text"])
        self.assertFalse(shown["reloaded"])
        self.assertEqual(len(shown["rows"]), 5)
        self.assertEqual(
            [(r.method, r.path, r.body) for r in tunnel.local.received if r.path == "/orders"],
            [("POST", "/orders", b'{"item":"lamp","quantity":2}')] * 2,
        )
        self.assertScreenshot(listScreenshot)
        self.assertScreenshot(replayScreenshot)
