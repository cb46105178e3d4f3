"""The report and the sweep leaderboard as a reader sees them: rendered by headless Chromium.

Each test takes a screenshot and asserts on its pixels (what is visible), or on the DOM that
Chromium built. Skipped where no Chromium is installed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from gpo_vae.leaderboard import rank_rows, to_html
from gpo_vae.report import build_report, load_tables
from gpo_vae.report.html import page
from gpo_vae.report.plots import TARGET_COLOR, method_color
from gpo_vae.report.sections import scatter_section
from tests.report.test_report import write_eval_dir

BROWSER = next(
    (shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome") if shutil.which(name)),
    None,
)
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no headless Chromium installed")
WIDTH = 1280


def _chromium(*args: str) -> subprocess.CompletedProcess:
    command = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


def screenshot(url_or_path: str | Path, out: Path, height: int) -> np.ndarray:
    """RGB pixels of the page at ``WIDTH`` × ``height``. A URL with a ``#fragment`` is shown in a
    full-window frame (Chromium's command-line screenshot does not scroll the page itself)."""
    from PIL import Image

    target = str(url_or_path)
    if "#" in target:
        frame = out.with_suffix(".frame.html")
        frame.write_text(
            '<!DOCTYPE html><html><body style="margin:0">'
            f'<iframe src="{target}" style="border:0;width:{WIDTH}px;height:{height}px"></iframe></body></html>'
        )
        target = frame.as_uri()
    elif not target.startswith("file:"):
        target = Path(target).as_uri()
    _chromium(f"--window-size={WIDTH},{height}", "--virtual-time-budget=5000", f"--screenshot={out}", target)
    return np.asarray(Image.open(out).convert("RGB")).astype(int)


def dom(path: Path) -> str:
    return _chromium("--virtual-time-budget=5000", "--dump-dom", path.as_uri()).stdout


def _near(pixels: np.ndarray, colour: str, tolerance: int = 18) -> np.ndarray:
    rgb = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])
    return np.abs(pixels - rgb).max(axis=-1) <= tolerance


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_eval_dir(tmp_path_factory.mktemp("browser") / "eval", model_better=False)
    return build_report(root)


def test_the_per_perturbation_section_ranks_the_model_and_marks_each_target(report: Path, tmp_path: Path):
    """The ranked r figure and the scatter panels are drawn; each panel's target gene is a red
    diamond when the table names it, and no red is drawn without it."""
    tables = load_tables(report.parent)
    counts = {}
    for name, scatter in (
        ("with", tables.ate_scatter),
        ("without", tables.ate_scatter.drop(columns="target")),
    ):
        html_path = tmp_path / f"{name}.html"
        section = scatter_section(tables.__class__(**{**tables.__dict__, "ate_scatter": scatter}))
        assert section.count("<img") == 2, "the ranked figure and the scatter panels"
        html_path.write_text(page("scatter", "", [("scatter", "Effects", section)]))
        pixels = screenshot(html_path, tmp_path / f"{name}.png", 2000)
        red, green, blue = pixels[..., 0], pixels[..., 1], pixels[..., 2]
        model_blue = (blue - red > 60) & (blue - green > 25)  # the model's points, translucent or not
        counts[name] = (_near(pixels, TARGET_COLOR, tolerance=8).sum(), model_blue.sum())
    target_with, model_with = counts["with"]
    target_without, model_without = counts["without"]
    assert model_with > 300 and model_without > 300, "the model's points are drawn"
    assert target_with > 100 and target_without < 10, counts


def test_one_main_verdict_in_the_headline_and_a_grn_verdict(report: Path, tmp_path: Path):
    rendered = dom(report)
    assert rendered.count('id="verdict"') == 1
    main = rendered.split('id="verdict">', 1)[1].split("</p>", 1)[0]
    assert main.startswith("The model's mean Pearson r on held-out ATE") and "below" in main
    assert rendered.count(main) == 1, "the main verdict is said once"
    assert 'id="grn-verdict"' in rendered.split('id="screen"', 1)[0], "the headline says how the GRN did"
    top = screenshot(report, tmp_path / "top.png", 1100)
    red_border = _near(top, "#c0392b", tolerance=10)
    rows = np.flatnonzero(red_border.any(axis=1))
    assert rows.size > 20, "a red verdict box is visible in the first screen"


def test_the_navigation_stays_on_screen_when_scrolled(report: Path, tmp_path: Path):
    unscrolled = screenshot(report, tmp_path / "top.png", 900)
    scrolled = screenshot(f"{report.as_uri()}#provenance", tmp_path / "scrolled.png", 900)
    band = scrolled[4:30]
    assert _near(band, method_color("model"), tolerance=40).sum() > 100, "nav links visible at the top"
    matches = [y for y in range(0, 400) if np.array_equal(unscrolled[y + 4 : y + 30], band)]
    assert matches, "the band at the top of the scrolled page is the navigation bar of the page's head"


def test_the_leaderboard_shows_the_baseline_and_links_each_report(report: Path, tmp_path: Path):
    out = tmp_path / "sweeps" / "demo"
    out.mkdir(parents=True)
    rows = [
        {
            "point": f"p{i}",
            "label": f"hop={i}",
            "parameters": {"model.hop": i},
            "metrics": {
                "model_mean_pearson": m,
                "mean_baseline_mean_pearson": 0.8,
                "model_minus_mean_baseline": m - 0.8,
            },
            "run_dir": str(tmp_path / f"run{i}"),
            "evaluation_dir": str(report.parent),
        }
        for i, m in enumerate((0.2, 0.5))
    ]
    ranked = rank_rows(rows, "model_mean_pearson", "maximize")
    path = out / "leaderboard.html"
    path.write_text(to_html(ranked, "demo", "model_mean_pearson", "maximize", "two points", out))
    rendered = dom(path)
    assert "0 of 2 points beat the per-perturbation training-mean baseline" in rendered
    header = rendered.split("<thead>", 1)[1].split("</thead>", 1)[0]
    headers = [cell.split(">", 1)[1].split("<", 1)[0] for cell in header.split("<th")[1:]]
    assert headers.index("mean baseline r") == headers.index("model r") + 1
    hrefs = [part.split('"', 1)[0] for part in rendered.split('href="')[1:]]
    assert len(hrefs) == 2 and all((out / href).resolve() == report.resolve() for href in hrefs)
    pixels = screenshot(path, tmp_path / "board.png", 500)
    assert _near(pixels, "#c0392b", tolerance=10).sum() > 200, "the losing gap and the verdict show in red"
