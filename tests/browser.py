"""Headless Chromium for tests: install Debian's chromium and chromium-driver where missing,
open a page (a plotly file, the MLflow UI), read what it rendered and take a screenshot."""

from __future__ import annotations

import io
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.system import apt_install

PACKAGES = ("chromium", "chromium-driver")
# Headless without the networking flags keeps dialling out (FACTS.md). scatter3d needs
# WebGL: with no GPU, Chromium draws it with SwiftShader, which it now enables only on request.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--window-size=1200,900",
)
# What the page drew, read from plotly's own state once it has finished plotting.
READ_PLOT = """
const gd = document.querySelector('.js-plotly-plot');
if (!gd || !gd._fullData || !gd._fullLayout) return null;
const scene = gd._fullLayout.scene && gd._fullLayout.scene._scene;
return {
  traces: gd._fullData.map(t => ({name: t.name, type: t.type, points: t._length})),
  webgl: Boolean(scene && scene.glplot),
};
"""


def ensure_chromium() -> tuple[str, str]:
    """Paths of chromium and chromedriver, installing the Debian packages if either is
    missing (as root, like CI on a fresh machine)."""
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        apt_install(*PACKAGES)
    return shutil.which("chromium"), shutil.which("chromedriver")


@dataclass(frozen=True)
class Rendered:
    traces: list[dict]
    webgl: bool
    screenshot: np.ndarray
    """RGB uint8 (height, width, 3)."""


@contextmanager
def chrome(chromium: str, chromedriver: str) -> Iterator:
    """A headless Chromium session (selenium WebDriver) with a throwaway profile."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(driver, save_as: Path | None = None) -> np.ndarray:
    """The window as RGB uint8 (height, width, 3); also written to save_as, if given."""
    png = driver.get_screenshot_as_png()
    if save_as is not None:
        save_as.write_bytes(png)
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def page_text(driver) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.TAG_NAME, "body").text


def wait_for(driver, condition: Callable[[], object], what: str, timeout: float = 60.0) -> object:
    """What condition returns once it is true; fails, with what the page shows, after
    timeout seconds."""
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        if time.monotonic() > deadline:
            shown = " | ".join(page_text(driver).splitlines())[:3000]
            pytest.fail(f"{what}: not shown after {timeout} s at {driver.current_url}: {shown}")
        time.sleep(0.2)
    return found


def render(page: Path, chromium: str, chromedriver: str, timeout: float = 30.0) -> Rendered:
    """Open page (file://) in headless Chromium; return the plot's traces and a screenshot."""
    with chrome(chromium, chromedriver) as driver:
        driver.get(page.resolve().as_uri())
        read = lambda: driver.execute_script(READ_PLOT)  # noqa: E731
        state = wait_for(driver, read, f"a plotly plot in {page}", timeout)
        time.sleep(1.0)  # let WebGL finish its first frame
        image = screenshot(driver)
    return Rendered(state["traces"], state["webgl"], image)


def colours_drawn(image: np.ndarray, colours: list[str], tolerance: int = 40) -> dict[str, int]:
    """How many pixels lie within `tolerance` (per channel) of each '#rrggbb' colour."""
    counts = {}
    for colour in colours:
        rgb = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])
        near = np.abs(image.astype(int) - rgb).max(axis=2) <= tolerance
        counts[colour] = int(near.sum())
    return counts


def check_rendered(page: Path, counts: list[int], chromium, min_colours: int = 10) -> None:
    """Assert that page shows ten digit traces with `counts` points, drawn by WebGL and
    visible in a screenshot: at least min_colours digit colours inside the 3D scene."""
    from pipeline.plots import DIGIT_COLOURS

    rendered = render(page, *chromium)
    assert [t["name"] for t in rendered.traces] == [f"digit {d}" for d in range(10)]
    assert [t["type"] for t in rendered.traces] == ["scatter3d"] * 10
    assert [t["points"] for t in rendered.traces] == counts
    assert rendered.webgl, "the 3D scene has no WebGL context: the scatter was not drawn"
    shot = rendered.screenshot
    assert shot.std() > 10, "the screenshot is blank"
    scene = shot[80:, : int(shot.shape[1] * 0.85)]  # below the title, left of the legend
    drawn = colours_drawn(scene, list(DIGIT_COLOURS))
    assert sum(n >= 10 for n in drawn.values()) >= min_colours, drawn
