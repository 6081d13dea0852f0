"""report.html in a real browser: headless Chromium renders it, offline, to a non-blank page."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fedsim.report import write_report
from tests.report.test_report_html import make_run_dir

CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="no chromium on PATH (Debian: apt-get install -y chromium); the browser check "
    "of report.html is skipped",
)
def test_report_renders_offline_in_headless_chromium(tmp_path: Path) -> None:
    runs = [make_run_dir(tmp_path / f"z{z}", noise=z, seed=2) for z in (0.7, 1.5)]
    page = write_report(runs, tmp_path / "report")
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            # Every host name fails to resolve: the page must need no network at all.
            "--host-resolver-rules=MAP * ~NOTFOUND",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            "--window-size=1200,2000",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=90,
    )
    assert shot.is_file()
    pixels = np.asarray(Image.open(shot).convert("RGB"))  # (height, width, 3)
    assert pixels.shape == (2000, 1200, 3)
    # A blank (all white) or failed page has a handful of colours; text, tables, tinted
    # notes and the antialiased plots give hundreds.
    colours = np.unique(pixels.reshape(-1, 3), axis=0)
    assert len(colours) > 200
    # The plots (lower part of the page) rendered: they contain the run colours
    # matplotlib's C0 (blue, 31,119,180) and C1 (orange, 255,127,14).
    for rgb in ((31, 119, 180), (255, 127, 14)):
        close = np.all(np.abs(pixels.astype(int) - rgb) <= 12, axis=-1)
        assert close.sum() > 200, f"no plot colour {rgb} on the page"
