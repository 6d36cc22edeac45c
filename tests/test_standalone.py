"""A clone stands alone: nothing in the repository reads a folder beside it.

A developer's machine may have folders beside the checkout (a user's clone has none), and
there a test reading one of them passes while every user's run fails. `.ci/run` proves the
whole suite in an empty folder; this test names the offending line on any machine, at once.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# A path that climbs out of the repository: `../<name>`, `.parents[N].parent`, `.parent.parent`
# from a file at the repository's top, or the sibling folder's name joined to a parent.
OUTSIDE = re.compile(
    r"""\.\./(?!\.)[\w.-]+/|parents\[\d+\]\.parent\b|\.parent\s*/\s*["']shared["']"""
    r"""|["']\.\.["']\s*,\s*["']shared["']"""
)


def _tracked_files() -> list[Path]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.splitlines()
        return [ROOT / p for p in out]
    except (OSError, subprocess.CalledProcessError):
        # Not a git checkout (CI's copy): every file but build output and the venv.
        skip = {".venv", ".git", "dist", "build", "__pycache__"}
        return [p for p in ROOT.rglob("*") if p.is_file() and not skip & set(p.parts)]


def test_nothing_in_the_repository_reads_outside_it() -> None:
    code = (".py", ".sh", ".toml", ".cfg", ".ini", ".yaml", ".yml", ".json")
    names = {"Makefile", "run"}
    hits = []
    for path in _tracked_files():
        if path == Path(__file__).resolve() or not path.is_file():
            continue
        if path.suffix not in code and path.name not in names:
            continue
        for no, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if OUTSIDE.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{no}: {line.strip()}")
    assert hits == [], "reads outside the repository:\n" + "\n".join(hits)
