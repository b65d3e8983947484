"""The 3D latent plot in a real browser: headless Chromium opens the self-contained page
from file:// (no network) and the scatter must actually render with WebGL."""

from pathlib import Path

import numpy as np

from pipeline.plots import latent_scatter_3d, standalone_html
from tests.browser import check_rendered

COUNTS = [200 + 13 * digit for digit in range(10)]  # distinct, so a mix-up shows


def test_latent_plot_renders_in_headless_chromium(tmp_path: Path, chromium):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), COUNTS)
    centres = rng.normal(scale=5.0, size=(10, 3))
    points = centres[labels] + rng.normal(size=(len(labels), 3))
    page = tmp_path / "latent_3d.html"
    page.write_text(standalone_html(latent_scatter_3d(points, labels, "codes")), encoding="utf-8")
    check_rendered(page, COUNTS, chromium)
