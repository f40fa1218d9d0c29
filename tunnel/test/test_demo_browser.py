"""
The demo page in a real browser: Debian's headless Chromium, driven by
Selenium, opens what C{python -m tunnel.demo} prints and watches the page
say that the tunnel is live, then offline once the demo has stopped.
"""

from __future__ import annotations

import os
import sys

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait
from twisted.internet import defer, reactor
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tunnel.test.twistdprocess import spawnPython

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

#: A PNG of the page is tens of kilobytes; an empty or broken one is far less.
MINIMUM_SCREENSHOT = 5000


def missingBrowser() -> str | None:
    """Why the browser test cannot run here, or L{None} if it can."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.path.exists(path):
            return f"{path} is missing (Debian package {package})"
    return None


def startBrowser() -> webdriver.Chrome:
    """
    Start headless Chromium with the Debian driver, named explicitly so that
    Selenium never looks for (or downloads) a browser or a driver itself.
    """
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1024,900",
        # Only the demo, on loopback: no proxy, no background fetches.
        # Chromium resolves demo.localhost to loopback by itself.
        "--no-proxy-server",
        "--disable-background-networking",
    ):
        options.add_argument(argument)
    return webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))


def text(driver: webdriver.Chrome, elementId: str) -> str:
    """The visible text of the element with id C{elementId}."""
    return driver.find_element(By.ID, elementId).text


def watchLive(driver: webdriver.Chrome, url: str, screenshot: str) -> dict:
    """
    Open the page and wait until it says Live and its count of answered
    requests has gone up twice without the page being loaded again; save a
    screenshot of it then.

    @return: what the page showed: C{h1}, C{headers}, C{served} (the counts
        seen, in order), C{rtt}, C{reloaded}.
    """
    driver.get(url)
    driver.execute_script("window.loadedOnce = true;")
    seen: list[int] = []

    def counting(driver: webdriver.Chrome) -> bool:
        if text(driver, "status") != "Live":
            return False
        served = int(text(driver, "served"))
        if not seen or served != seen[-1]:
            seen.append(served)
        return len(seen) >= 3

    WebDriverWait(driver, 30, poll_frequency=0.2).until(counting)
    driver.save_screenshot(screenshot)
    return {
        "h1": driver.find_element(By.TAG_NAME, "h1").text,
        "headers": text(driver, "headers"),
        "served": seen,
        "rtt": text(driver, "rtt"),
        "reloaded": driver.execute_script("return window.loadedOnce !== true;"),
    }


def watchOffline(driver: webdriver.Chrome) -> str:
    """Wait until the page says it is no longer reached; return what it says."""
    WebDriverWait(driver, 20, poll_frequency=0.2).until(
        lambda driver: text(driver, "status") == "Offline"
    )
    return text(driver, "status")


class DemoBrowserTests(TestCase):
    """The demo page, as a browser shows it."""

    skip = missingBrowser()
    timeout = 120

    @defer.inlineCallbacks
    def test_pageShowsTunnelLiveThenOffline(self):
        """
        Through the tunnel, the page polls the local service by itself: it
        says Live, with a round-trip time and a count of answered requests
        that keeps going up; once the demo has stopped it says Offline.
        """
        demo = spawnPython(reactor, [sys.executable, "-m", "tunnel.demo", "--port", "0"])
        self.addCleanup(demo.kill)
        match = yield demo.waitFor(r"Open (http://demo\.localhost:\d+/)")
        driver = yield deferToThread(startBrowser)
        self.addCleanup(deferToThread, driver.quit)
        screenshot = self.mktemp() + ".png"

        shown = yield deferToThread(watchLive, driver, match.group(1), screenshot)
        self.assertEqual(shown["h1"], "Hello through the tunnel")
        self.assertIn("X-Forwarded-For", shown["headers"])
        first, *later = shown["served"]
        self.assertEqual(later, sorted(later))
        self.assertGreater(later[0], first)
        self.assertGreaterEqual(float(shown["rtt"]), 0)
        self.assertFalse(shown["reloaded"])
        with open(screenshot, "rb") as f:
            png = f.read()
        self.assertEqual(png[:8], b"\x89PNG\r\n\x1a\n")
        self.assertGreater(len(png), MINIMUM_SCREENSHOT)

        yield demo.kill()
        status = yield deferToThread(watchOffline, driver)
        self.assertEqual(status, "Offline")
