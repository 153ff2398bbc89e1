"""The project's manual as tests read it: README.md, then the docs pages (docs/*.md)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def manual_pages() -> list[Path]:
    """README.md first, then every page of the docs site, in name order."""
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def manual_lines() -> list[str]:
    """Every line of the manual, page after page."""
    return [line for page in manual_pages() for line in page.read_text().splitlines()]
