"""Headless Chromium for tests: install Debian's chromium and chromium-driver where missing,
open a page (study.html, the MLflow UI), cut off from the network if asked, read what it
rendered and the requests it sent, and take a screenshot."""

from __future__ import annotations

import io
import json
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
# What a plot (CSS selector: arguments[0]) drew, read from plotly's own state once it
# has finished plotting.
READ_PLOT = """
const gd = document.querySelector(arguments[0]);
if (!gd || !gd._fullData || !gd._fullLayout) return null;
const scene = gd._fullLayout.scene && gd._fullLayout.scene._scene;
return {
  traces: gd._fullData.map(t => ({
    name: t.name, type: t.type, points: t._length, first_x: t.x ? Number(t.x[0]) : null,
  })),
  webgl: Boolean(scene && scene.glplot),
  title: gd._fullLayout.title ? gd._fullLayout.title.text : null,
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
    title: str | None


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
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})  # requests_sent
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


def go_offline(driver) -> None:
    """Cut the browser off the network (DevTools' offline emulation): a page that needs
    anything from outside itself fails to get it."""
    driver.execute_cdp_cmd("Network.enable", {})
    offline = {"offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1}
    driver.execute_cdp_cmd("Network.emulateNetworkConditions", offline)


def requests_sent(driver) -> list[str]:
    """The URL of every request the browser sent since the last call (the DevTools log)."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def read_plot(driver, selector: str) -> dict | None:
    """The traces, WebGL state and title of the plot at selector; None until drawn."""
    return driver.execute_script(READ_PLOT, selector)


def element_image(driver, selector: str) -> np.ndarray:
    """What the element at selector shows, as RGB uint8 (scrolled into view first)."""
    from selenium.webdriver.common.by import By

    png = driver.find_element(By.CSS_SELECTOR, selector).screenshot_as_png
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def render(driver, selector: str, timeout: float = 30.0) -> Rendered:
    """The plot at selector in the open page, once drawn, with a screenshot of it."""
    read = lambda: read_plot(driver, selector)  # noqa: E731
    state = wait_for(driver, read, f"a plotly plot at {selector}", timeout)
    time.sleep(1.0)  # let WebGL finish its first frame
    image = element_image(driver, selector)
    return Rendered(state["traces"], state["webgl"], image, state["title"])


def colours_drawn(image: np.ndarray, colours: list[str], tolerance: int = 40) -> dict[str, int]:
    """How many pixels lie within `tolerance` (per channel) of each '#rrggbb' colour."""
    counts = {}
    for colour in colours:
        rgb = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])
        near = np.abs(image.astype(int) - rgb).max(axis=2) <= tolerance
        counts[colour] = int(near.sum())
    return counts


def check_rendered(rendered: Rendered, counts: list[int], min_colours: int = 10) -> None:
    """Assert that the plot shows ten class traces with `counts` points, drawn by WebGL and
    visible in its screenshot: at least min_colours class colours inside the 3D scene."""
    from pipeline.analysis.plots import CLASS_COLOURS

    assert len({t["name"] for t in rendered.traces}) == 10
    assert [t["type"] for t in rendered.traces] == ["scatter3d"] * 10
    assert [t["points"] for t in rendered.traces] == counts
    assert rendered.webgl, "the 3D scene has no WebGL context: the scatter was not drawn"
    shot = rendered.screenshot
    assert shot.std() > 10, "the screenshot is blank"
    scene = shot[60:, : int(shot.shape[1] * 0.85)]  # below the title, left of the legend
    drawn = colours_drawn(scene, list(CLASS_COLOURS[:10]))
    assert sum(n >= 10 for n in drawn.values()) >= min_colours, drawn


STUDY_SECTIONS = {
    "question": "The question and the answer",
    "results": "By configuration",
    "observations": "Observations and recommendation",
    "central-figure": "Test MSE and parameters against latent size",
    "loss-curves": "Loss curves",
    "reconstructions": "Reconstructions",
    "explorer": "Latent explorer",
    "interpolations": "Interpolations",
}
# A given 3D point cannot be aimed at with the mouse (its place on screen depends on the
# camera): to hover a chosen point, send the plotly_hover event plotly sends, same fields.
HOVER = """
const gd = document.getElementById('explorer-plot');
const [curve, avoid] = arguments;  // the first point of that trace not at index `avoid`
const trace = gd._fullData[curve], ids = Array.from(trace.customdata, Number);
const point = ids.findIndex((i) => i !== avoid), index = ids[point];
const hovered = {curveNumber: curve, pointNumber: point, customdata: index,
                 data: gd.data[curve], fullData: trace};
gd.emit('plotly_hover', {points: [hovered]});
return index;
"""
THUMBS = ("#explorer-image", "#explorer-reconstruction")
LOADS = 3  # a load time is the best of three: other work on the machine only adds to it


def open_offline(driver, page: Path) -> float:
    """Open page (file://) with the network off; assert that every request it sent stayed
    in file:// or data: URIs. Returns the page's load time in seconds."""
    go_offline(driver)
    requests_sent(driver)  # only what the page sends from here on
    driver.get(page.resolve().as_uri())
    load_ms = driver.execute_script(
        "return performance.getEntriesByType('navigation')[0].loadEventEnd"
    )
    sent = requests_sent(driver)
    assert page.resolve().as_uri() in sent, sent  # the log holds the page itself
    assert [url for url in sent if not url.startswith(("file:", "data:"))] == []
    return load_ms / 1000


def mouse_hover_somewhere(driver, selector: str, caption: str, step: int = 8) -> str:
    """Move the real mouse over the plot, from the middle of its scene outwards, until the
    text at `caption` changes (plotly picked a point under the cursor); returns that text."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    plot = driver.find_element(By.CSS_SELECTOR, selector)
    text = driver.find_element(By.CSS_SELECTOR, caption).text
    middle_x = -plot.rect["width"] // 10  # the scene sits left of the legend
    offsets = [(x, y) for x in range(-240, 241, step) for y in range(-200, 201, step)]
    offsets.sort(key=lambda o: (o[0] - middle_x) ** 2 + o[1] ** 2)
    for x, y in offsets:
        ActionChains(driver).move_to_element_with_offset(plot, x, y).perform()
        shown = driver.find_element(By.CSS_SELECTOR, caption).text
        if shown != text:
            return shown
    pytest.fail(f"no point of {selector} was hovered by the mouse")


def _switched(driver, title: str) -> dict | None:
    state = read_plot(driver, "#explorer-plot")
    return state if state["title"] != title else None


def check_study_page(
    page: Path, chromium, counts: list[int], save_as: Path | None = None, min_colours: int = 10
) -> None:
    """Assert what study.html must do in Chromium offline: every section present, three
    plots drawn, the explorer's first model drawn with WebGL (`counts` points per digit),
    hovering a point (with the mouse, then a chosen point through plotly's hover event)
    changes both thumbnails, and the model switch changes the points and the
    reconstruction. Saves a screenshot of the hovered explorer to save_as."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    with chrome(*chromium) as driver:
        open_offline(driver, page)
        assert read_plot(driver, "#explorer-plot") is None  # drawn once in view
        driver.execute_script("document.getElementById('explorer').scrollIntoView()")
        first = render(driver, "#explorer-plot")
        check_rendered(first, counts, min_colours)
        for anchor, heading in STUDY_SECTIONS.items():
            assert heading in driver.find_element(By.ID, anchor).text, anchor
        assert len(driver.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")) == 3
        before = [element_image(driver, s) for s in THUMBS]
        moused = mouse_hover_somewhere(driver, "#explorer-plot", "#explorer-caption")
        moused_index = int(moused.removeprefix("Test image ").split(",")[0])
        moused_images = [element_image(driver, s) for s in THUMBS]
        assert not any(np.array_equal(a, b) for a, b in zip(before, moused_images, strict=True))
        screenshot(driver, save_as)  # the explorer, hovered by the mouse
        index = driver.execute_script(HOVER, 3, moused_index)  # a class 3 not hovered yet
        caption = driver.find_element(By.ID, "explorer-caption").text
        assert f"Test image {index}, class {first.traces[3]['name']}:" in caption, caption
        hovered = [element_image(driver, s) for s in THUMBS]
        for old, new in zip(moused_images, hovered, strict=True):
            assert new.std() > 5 and not np.array_equal(old, new), "the thumbnail did not change"
        Select(driver.find_element(By.ID, "explorer-model")).select_by_index(1)
        state = wait_for(driver, lambda: _switched(driver, first.title), "the second model")
        assert [t["first_x"] for t in state["traces"]] != [t["first_x"] for t in first.traces]
        assert not np.array_equal(element_image(driver, THUMBS[1]), hovered[1])


def cold_load_seconds(page: Path, chromium) -> float:
    """The page's load time offline in a fresh browser (nothing cached), the best of
    LOADS browsers: other work on the machine only adds to it."""
    times = []
    for _ in range(LOADS):
        with chrome(*chromium) as driver:
            times.append(open_offline(driver, page))
    return min(times)
