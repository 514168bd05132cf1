"""Headless Chromium driven by Selenium, with its fake camera (see TESTING.md).

Start it inside the test's loopback namespace (``tests.support.netns``): Chromium then offers
only loopback candidates, which it does at all only with ``--allow-loopback-in-peer-connection``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["CHROMIUM_FLAGS", "Browser", "browser_unavailable", "chromium"]

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--autoplay-policy=no-user-gesture-required",
    "--window-size=1280,900",
)


def _binaries() -> tuple[str | None, str | None]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    return browser, shutil.which("chromedriver")


@functools.cache
def browser_unavailable() -> str | None:
    """Why headless Chromium cannot be driven here, or ``None`` when it can."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e .[dev])"
    browser, driver = _binaries()
    if browser is None or driver is None:
        return "chromium and chromedriver are needed: apt-get install chromium chromium-driver"
    return None


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A Selenium ``WebDriver`` of a fresh headless Chromium; quit on exit, pass or fail."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver_path = _binaries()
    assert browser is not None and driver_path is not None
    with tempfile.TemporaryDirectory(prefix="sp-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = browser
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(options=options, service=Service(driver_path))
        try:
            driver.set_script_timeout(20)
            yield driver
        finally:
            driver.quit()


class Browser:
    """A Chromium driven from one thread of its own, so a test's event loop (which serves the
    page) never blocks on Selenium's synchronous calls. Make it inside the namespace."""

    def __init__(self, pool: ThreadPoolExecutor, driver: Any) -> None:
        self._pool = pool
        self.driver = driver

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(driver, *args)`` on the browser's thread."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, self.driver, *args)

    async def js(self, script: str, *args: Any) -> Any:
        """The value of ``script`` (a function body: ``return …``) in the page."""
        return await self.call(lambda d, *a: d.execute_script(script, *a), *args)

    @classmethod
    @contextlib.asynccontextmanager
    async def start(cls) -> AsyncIterator[Browser]:
        """A started browser; quit on exit, pass or fail."""
        pool = ThreadPoolExecutor(1, thread_name_prefix="chromium")
        loop = asyncio.get_running_loop()
        cm = chromium()
        try:
            driver = await loop.run_in_executor(pool, cm.__enter__)
            try:
                yield cls(pool, driver)
            finally:
                await loop.run_in_executor(pool, cm.__exit__, None, None, None)
        finally:
            pool.shutdown(wait=True)
