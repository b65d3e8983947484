"""study.html in a real browser: headless Chromium, network off, opens the page from
file://; the sections show, the explorer draws with WebGL, hovering a point changes its
thumbnails, the model switch changes the points, and a fresh browser loads it in under 3 s."""

from pathlib import Path

from tests.browser import check_study_page, cold_load_seconds
from tests.pipeline.analysis.test_study_page import COUNTS, synthetic_page

LOAD_LIMIT_S = 3.0


def test_study_page_in_headless_chromium_offline(tmp_path: Path, chromium):
    page = tmp_path / "study.html"
    page.write_text(synthetic_page(), encoding="utf-8")
    check_study_page(page, chromium, COUNTS, save_as=tmp_path / "hovered.png")
    load_s = cold_load_seconds(page, chromium)
    print(f"study.html loaded in {load_s:.2f} s")
    assert load_s < LOAD_LIMIT_S
