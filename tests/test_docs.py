"""The docs site builds in strict mode, lists every page, and the README stays short.

    uv run mkdocs build --strict        # what these tests run, into a temporary folder

mkdocs.yml's `validation:` turns a link to a missing page or anchor, an absolute link and a
page left out of `nav` into warnings, and `strict: true` makes each warning fail the build;
the last test breaks a copy of the docs to show that it does.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

README_MAX_LINES = 250
LINK = re.compile(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def mkdocs_build(root: Path, site_dir: Path) -> subprocess.CompletedProcess:
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed (it is in the dev group: `uv sync` installs it)")
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict",
                           "--config-file", str(root / "mkdocs.yml"), "--site-dir", str(site_dir)],
                          cwd=root, capture_output=True, text=True, timeout=300)


def nav_pages(nav: list) -> list[str]:
    """The page paths of a mkdocs `nav`, sections flattened."""
    pages = []
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        pages.extend(nav_pages(value) if isinstance(value, list) else [value])
    return pages


def github_slug(heading: str) -> str:
    """The anchor GitHub (and MkDocs, for these headings) gives a Markdown heading."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    headings, fence = [], False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            fence = not fence
        elif not fence and line.startswith("#"):
            headings.append(line.lstrip("#"))
    return {github_slug(h) for h in headings}


def test_docs_build_in_strict_mode(tmp_path):
    proc = mkdocs_build(REPO, tmp_path / "site")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "WARNING" not in proc.stderr, proc.stderr
    assert (tmp_path / "site" / "index.html").is_file()


def test_every_page_is_in_the_nav():
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    assert config["strict"] is True
    nav = nav_pages(config["nav"])
    pages = sorted(p.relative_to(REPO / "docs").as_posix() for p in (REPO / "docs").rglob("*.md"))
    assert sorted(nav) == pages, f"in docs/ but not in nav: {set(pages) - set(nav)}; " \
                                 f"in nav but not in docs/: {set(nav) - set(pages)}"
    assert len(nav) == len(set(nav)), f"a page is listed twice: {nav}"


def test_readme_is_short():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) < README_MAX_LINES, \
        f"README.md has {len(lines)} lines; move the detail to a page under docs/"


def test_readme_links_lead_somewhere():
    """MkDocs checks the pages' links; the README is not part of the site, so this does."""
    readme = REPO / "README.md"
    broken = []
    for target in LINK.findall(readme.read_text()):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        page = REPO / path if path else readme
        if not page.exists():
            broken.append(target)
        elif anchor and page.suffix == ".md" and anchor not in anchors(page):
            broken.append(target)
    assert not broken, f"README.md links to what does not exist: {broken}"


@pytest.mark.parametrize("page, added, expected", [
    ("index.md", "\n[gone](no-such-page.md)\n", "no-such-page.md"),
    ("index.md", "\n[gone](stages.md#no-such-heading)\n", "no-such-heading"),
    ("stray.md", "# Not in the nav\n", "stray.md"),
], ids=["broken link", "broken anchor", "page not in nav"])
def test_strict_build_fails_on_a_broken_docs_tree(tmp_path, page, added, expected):
    root = tmp_path / "repo"
    shutil.copytree(REPO / "docs", root / "docs")
    shutil.copy(REPO / "mkdocs.yml", root / "mkdocs.yml")
    assert mkdocs_build(root, tmp_path / "site").returncode == 0, "the copy builds before"
    with (root / "docs" / page).open("a") as f:
        f.write(added)
    proc = mkdocs_build(root, tmp_path / "site")
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert expected in proc.stderr, proc.stderr
