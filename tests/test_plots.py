"""``dvc plots show`` draws the repository's plots with no network, in headless Chromium.

    dvc plots show          # writes dvc_plots/index.html from plots/offline.html

The page template (``plots.html_template`` in ``.dvc/config``) carries Vega inline; DVC's
default page loads it from a CDN and stays blank offline. The browser is Debian's
``chromium``, with every host name unresolvable, so the page can reach nothing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.pipeline_run import REPO, dvc, git

CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="needs Debian's chromium (apt-get install chromium; .ci/run installs it)")

# What `dvc plots show` reads: the plots' definitions and the committed data they plot.
PLOT_INPUTS = (".dvc/config", ".dvc/.gitignore", ".dvcignore", ".gitignore", "dvc.yaml",
               "params.yaml", "metrics", "plots")
LOSS_DIV = "metrics_train_live_plots_metrics_loss_tsv"
LOSS_TSV = REPO / "metrics" / "train_live" / "plots" / "metrics" / "loss.tsv"


@pytest.fixture(scope="module")
def repo_copy(tmp_path_factory) -> Path:
    """A git repository holding the committed plot inputs (DVC writes under .dvc/tmp)."""
    repo = tmp_path_factory.mktemp("plots") / "repo"
    for name in PLOT_INPUTS:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, repo / name)
        else:
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, repo / name)
    git("init", "-q", cwd=repo)
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "plot inputs", cwd=repo)
    return repo


def render_offline(page: Path) -> str:
    """The page's DOM after its scripts ran, in Chromium that can resolve no host name."""
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=15000",
         "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"chromium failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return proc.stdout


class LineMarks(HTMLParser):
    """The ``d`` of every SVG line mark inside the element with id ``div_id``."""

    def __init__(self, div_id: str):
        super().__init__()
        self.div_id, self.depth, self.paths = div_id, 0, []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if self.depth:
            self.depth += tag not in ("path", "circle", "rect", "line", "stop")
            if tag == "path" and attrs.get("aria-roledescription") == "line mark":
                self.paths.append(attrs.get("d") or "")
        elif attrs.get("id") == self.div_id:
            self.depth = 1

    def handle_endtag(self, tag):
        if self.depth and tag not in ("path", "circle", "rect", "line", "stop"):
            self.depth -= 1


def line_marks(dom: str, div_id: str) -> list[str]:
    parser = LineMarks(div_id)
    parser.feed(dom)
    return parser.paths


def test_the_committed_config_selects_the_offline_page(repo_copy):
    shown = dvc("config", "plots.html_template", cwd=repo_copy).stdout.strip()
    offline = repo_copy / "plots" / "offline.html"
    assert (repo_copy / ".dvc" / shown).resolve() == offline.resolve()
    page = (REPO / "plots" / "offline.html").read_text(encoding="utf-8")
    assert "{scripts}" not in page, "DVC would put its CDN <script> tags there"
    assert "<script src" not in page and "sourceMappingURL" not in page


@needs_chromium
@pytest.mark.browser
def test_dvc_plots_show_draws_the_loss_curve_offline(repo_copy):
    dvc("plots", "show", cwd=repo_copy)
    page = repo_copy / "dvc_plots" / "index.html"
    html = page.read_text(encoding="utf-8")
    assert "cdn.jsdelivr" not in html and "<script src" not in html
    assert git("status", "--porcelain", cwd=repo_copy) == "", "dvc_plots/ must be git-ignored"

    dom = render_offline(page)
    paths = line_marks(dom, LOSS_DIV)
    assert paths, f"no SVG line mark under #{LOSS_DIV}: the loss plot did not draw"
    logged = len(LOSS_TSV.read_text().splitlines()) - 1  # minus the header
    points = max(len(re.findall(r"[ML]", d)) for d in paths)
    assert points == logged, f"the loss line has {points} points, loss.tsv has {logged} rows"
    bars = dom.count('aria-roledescription="bar"')
    assert bars == 5, f"{bars} accuracy-by-difficulty bars drawn, expected 5 (all and 4 levels)"


@needs_chromium
@pytest.mark.browser
def test_dvcs_default_page_stays_blank_in_the_same_browser(repo_copy, tmp_path):
    """The control: with DVC's own page (Vega from a CDN) the same browser draws nothing,
    so the test above proves the page needs no network."""
    from dvc_render.html import PAGE_HTML

    default = tmp_path / "default.html"
    default.write_text(PAGE_HTML, encoding="utf-8")
    out = tmp_path / "default_plots"
    dvc("plots", "show", "--html-template", str(default), "-o", str(out), cwd=repo_copy)
    html = (out / "index.html").read_text(encoding="utf-8")
    assert "cdn.jsdelivr" in html
    assert line_marks(render_offline(out / "index.html"), LOSS_DIV) == []


def test_dvc_plots_diff_uses_the_offline_page_too(repo_copy, tmp_path):
    out = tmp_path / "diff_plots"
    dvc("plots", "diff", "HEAD", "-o", str(out), cwd=repo_copy)
    html = (out / "index.html").read_text(encoding="utf-8")
    assert "cdn.jsdelivr" not in html and "vegaEmbed = (el, spec, opt)" in html
