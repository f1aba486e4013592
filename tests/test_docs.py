"""The README a newcomer reads in five minutes, and docs/ as a site that builds in strict mode
(MkDocs fails on a broken link or a page left out of the nav)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def build(root: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(root / "mkdocs.yml"),
                           "-d", str(site)], capture_output=True, text=True, timeout=120)


def test_the_docs_build_in_strict_mode(tmp_path):
    out = build(REPO, tmp_path / "site")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "site" / "ladder" / "index.html").exists()


@pytest.mark.parametrize("damage", ["a broken link", "a page left out of the nav"])
def test_strict_mode_fails_on_a_broken_link_or_a_missing_page(tmp_path, damage):
    shutil.copytree(REPO / "docs", tmp_path / "docs")
    shutil.copy(REPO / "mkdocs.yml", tmp_path / "mkdocs.yml")
    if damage == "a broken link":
        with open(tmp_path / "docs" / "claims.md", "a") as f:
            f.write("\nSee [the missing page](no-such-page.md).\n")
    else:
        (tmp_path / "docs" / "orphan.md").write_text("# An orphan\n")
    assert build(tmp_path, tmp_path / "site").returncode != 0


def test_the_readme_is_short_and_its_links_resolve():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) < 250
    targets = re.findall(r"\]\(([^)#]+)\)", text)
    assert targets and all((REPO / t).exists() for t in targets), [t for t in targets if not (REPO / t).exists()]
    nav = (REPO / "mkdocs.yml").read_text()
    assert all(p.name in nav for p in (REPO / "docs").glob("*.md"))  # every page is in the site
