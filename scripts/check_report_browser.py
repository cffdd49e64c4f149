#!/usr/bin/env python
"""Open an autocompress HTML report in headless Chromium and check that it really renders offline.

Checks: the page finishes its script (``body[data-rendered]``), every Pareto plot div holds plotly
SVG points, the first Pareto plot area is not blank in a screenshot (fraction of non-white
pixels inside its bounding box), and the page made no network request other than ``file:``,
``data:``, ``blob:`` and ``about:`` (CDP network log; http/https are also blocked).

Usage::

    python scripts/check_report_browser.py RUN/report.html --screenshot report.png

Needs the Debian packages ``chromium`` and ``chromium-driver`` and the ``selenium`` package.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

log = logging.getLogger("check_report_browser")

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
DRIVER_CANDIDATES = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1400,1000", "--hide-scrollbars")
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:", "chrome:", "chrome-error:")


@dataclass
class BrowserCheck:
    """What the browser saw."""

    rendered: bool
    pareto_plots: int
    points_per_plot: list[int]
    plot_box: dict[str, float]
    nonwhite_fraction: float
    requests: list[str] = field(default_factory=list)
    external_requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    screenshot: str | None = None


def find_chromium() -> tuple[str | None, str | None, str | None]:
    """(chromium binary, chromedriver, reason when unavailable)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return None, None, "the selenium package is not installed (pip install selenium)"
    browser = next((p for p in CHROMIUM_CANDIDATES if Path(p).is_file()), shutil.which("chromium"))
    driver = next((p for p in DRIVER_CANDIDATES if Path(p).is_file()), shutil.which("chromedriver"))
    if not browser:
        return None, None, "chromium is not installed (apt-get install -y chromium chromium-driver)"
    if not driver:
        return None, None, "chromedriver is not installed (apt-get install -y chromium-driver)"
    return browser, driver, None


def _nonwhite_fraction(png: bytes) -> float:
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB")
    lo = img.point(lambda v: 255 if v < 235 else 0).convert("L")  # any channel darker than near-white
    hist = lo.histogram()
    return 1.0 - hist[0] / max(1, img.width * img.height)


def check_report(html_path: str | Path, screenshot: str | Path | None = None, *,
                 timeout_s: float = 60.0) -> BrowserCheck:
    """Load ``html_path`` in headless Chromium and return what rendered (see the module docstring)."""
    from selenium import webdriver
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser, driver_path, reason = find_chromium()
    if reason:
        raise RuntimeError(reason)
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for flag in CHROMIUM_FLAGS:
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
    try:
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.setBlockedURLs", {"urls": ["http://*", "https://*", "ws://*", "wss://*"]})
        driver.set_page_load_timeout(max(timeout_s, 120.0))
        driver.get(Path(html_path).resolve().as_uri())
        WebDriverWait(driver, max(timeout_s, 60.0)).until(
            lambda d: d.execute_script("return document.body && document.body.getAttribute('data-rendered')"))
        plots = driver.find_elements(By.CSS_SELECTOR, ".pareto-plot")
        try:
            WebDriverWait(driver, timeout_s).until(
                lambda d: all(p.find_elements(By.CSS_SELECTOR, "svg .scatterlayer .point") for p in plots))
        except TimeoutException:
            log.warning("not every Pareto plot drew its points within %.0f s", timeout_s)
        time.sleep(0.3)  # let plotly finish its last paint
        points = [len(p.find_elements(By.CSS_SELECTOR, "svg .scatterlayer .point")) for p in plots]
        first = plots[0] if plots else None
        box: dict[str, float] = {}
        fraction = 0.0
        if first is not None:
            driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", first)
            time.sleep(0.2)
            box = {k: float(v) for k, v in first.rect.items()}
            fraction = _nonwhite_fraction(first.screenshot_as_png)
        shot = None
        if screenshot is not None:
            driver.execute_script("window.scrollTo(0, 0);")
            height = driver.execute_script("return document.documentElement.scrollHeight")
            driver.set_window_size(1400, min(int(height) + 50, 12000))
            time.sleep(0.5)
            Path(screenshot).write_bytes(driver.get_screenshot_as_png())
            shot = str(screenshot)
        requests = []
        for entry in driver.get_log("performance"):
            msg = json.loads(entry["message"])["message"]
            if msg.get("method") == "Network.requestWillBeSent":
                requests.append(msg["params"]["request"]["url"])
        console = [e["message"] for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
        rendered = bool(driver.execute_script("return document.body.getAttribute('data-rendered') === '1'"))
    finally:
        driver.quit()
    external = [u for u in requests if not u.startswith(LOCAL_SCHEMES)]
    return BrowserCheck(rendered=rendered, pareto_plots=len(points), points_per_plot=points, plot_box=box,
                        nonwhite_fraction=fraction, requests=[u[:120] for u in requests],
                        external_requests=external, console_errors=console, screenshot=shot)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path)
    parser.add_argument("--screenshot", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    result = check_report(args.report, args.screenshot)
    print(json.dumps(asdict(result), indent=2))
    ok = (result.rendered and result.pareto_plots > 0 and all(result.points_per_plot)
          and result.nonwhite_fraction > 0.02 and not result.external_requests)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
