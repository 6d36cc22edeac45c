"""`make bench` rewrites docs/benchmarks.md: what the benchmarks run alone measured stays."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_make_bench_keeps_the_sections_of_benchmarks_it_does_not_run() -> None:
    """A rewrite with one result keeps every other section of the current document verbatim
    (the relay's, the rollouts', the pipeline deployments'), replaces that result's own, and
    writes one Goals and one Reproduce."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        run_all = importlib.import_module("run_all")
    finally:
        sys.path.remove(str(ROOT / "bench"))
    old = (ROOT / "docs" / "benchmarks.md").read_text()
    titles = re.findall(r"^## (.+)$", old, flags=re.M)
    assert "Pipeline deployments: zmd-local vs ZenML's local deployer (issue 29)" in titles
    redone = "Deploy: call -> first good prediction"
    result = {"title": redone, "method": "NEW METHOD", "tables": [], "elapsed_s": 1.0}
    new = run_all._document([result], 60.0, old)
    new_titles = re.findall(r"^## (.+)$", new, flags=re.M)
    for title in set(titles) - {"Machine and versions", "Goals", "Reproduce"}:
        assert new_titles.count(title) == 1, title
    assert new_titles.count("Reproduce") == 1 and new_titles.count("Goals") == 1
    assert "NEW METHOD" in new
    for kept in run_all.carried_sections(old, {redone}):
        assert kept in new
    # A rewrite of the rewrite changes nothing more.
    assert run_all._document([result], 60.0, new).split("\n", 3)[3] == new.split("\n", 3)[3]
