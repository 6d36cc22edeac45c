"""Runs every benchmark (each in its own interpreter and isolated ZenML store), prints each
table, and writes docs/benchmarks.md.

Usage: ``.venv/bin/python bench/run_all.py`` (what ``make bench`` runs).
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as c  # noqa: E402

BENCHES = [
    "bench_deploy",
    "bench_model_object",
    "bench_faststart",
    "bench_warm",
    "bench_update",
    "bench_predict",
    "bench_list",
    "bench_read",
    "bench_server",
    "bench_bentoml",
    "bench_bentoml_start",
    "bench_vllm",
    "bench_batch",
]
# Run alone (each takes 9-25 min, or needs the real vLLM / a GPU): their sections in
# docs/benchmarks.md are kept as they are when `make bench` rewrites the file.
STANDALONE = [
    "bench_relay",
    "bench_relay_saturation",
    "bench_relay_stream",
    "bench_rollout",
    "bench_pipeline_deploy",
]
PER_BENCH_TIMEOUT = 600
OUT = c.REPO / "docs" / "benchmarks.md"
# The document's own sections: written anew each time.
_SKELETON = {"Machine and versions", "Goals", "Reproduce"}


def carried_sections(old: str, generated: set[str]) -> list[str]:
    """The level-2 sections of the former document that this run does not write: those of
    the benchmarks run alone (``STANDALONE``) and notes added by hand, each verbatim.

    Args:
        old: the former docs/benchmarks.md.
        generated: the titles of the sections this run writes.

    Returns:
        Each kept section's text, heading first, in the former order.
    """
    sections: list[list[str]] = []
    for line in old.splitlines():
        if line.startswith("## "):
            sections.append([line])
        elif sections:
            sections[-1].append(line)
    kept = []
    for lines in sections:
        title = lines[0][3:].strip()
        if title not in generated and title not in _SKELETON:
            kept.append("\n".join(lines).rstrip() + "\n")
    return kept


def _cpu_model() -> str:
    try:
        for ln in Path("/proc/cpuinfo").read_text().splitlines():
            if ln.startswith("model name"):
                return ln.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "not installed"


def _run_one(name: str, tmp: Path) -> dict[str, Any]:
    out = tmp / f"{name}.json"
    script = Path(__file__).resolve().parent / f"{name}.py"
    print(f"=== {name} ...", file=sys.stderr, flush=True)
    t = time.monotonic()
    wall_start = time.time()
    proc = subprocess.Popen(
        [c.PYTHON, str(script), "--json", str(out)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=None,  # progress lines go straight to our stderr
        text=True,
    )
    try:
        stdout, _ = proc.communicate(timeout=PER_BENCH_TIMEOUT)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        # SIGINT first: the benchmark's `finally` ends its servers and removes its store.
        proc.send_signal(signal.SIGINT)
        try:
            stdout, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, _ = proc.communicate(timeout=30)
        rc = -1
        _end_leftovers(name, wall_start)
    elapsed = time.monotonic() - t
    if rc == 0 and out.exists():
        result: dict[str, Any] = json.loads(out.read_text())
        print(c.result_markdown(result), flush=True)
        return result
    tail = stdout[-1500:] if stdout else ""
    print(f"{name} failed (exit {rc}) after {elapsed:.0f} s\n{tail}", flush=True)
    return {
        "name": name,
        "title": f"{name}: FAILED",
        "method": f"The benchmark exited with {rc} after {elapsed:.0f} s; no numbers.",
        "tables": [],
        "goals": [],
        "notes": [tail.replace("\n", " ")[-500:]] if tail else [],
        "elapsed_s": round(elapsed, 1),
    }


def _end_leftovers(name: str, since: float) -> None:
    """After a killed benchmark: end processes under its isolated dir(s), by pid.

    Only directories this run created (named after the benchmark, made after it started).
    """
    short = name.removeprefix("bench_")
    for root in Path(tempfile.gettempdir()).glob(f"zmd-bench-{short}-*"):
        if root.stat().st_mtime >= since - 1:
            c.end_our_processes(root)
            c.remove_root(root)


def _document(results: list[dict[str, Any]], total_s: float, old: str = "") -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    goals = [(r["title"], g) for r in results for g in r.get("goals", [])]
    met = sum(1 for _, g in goals if g["met"])
    lines = [
        "# Benchmarks",
        "",
        f"Measured {now} by `bench/run_all.py` (what `make bench` runs), {total_s / 60:.1f} min in all.",
        "",
        "## Machine and versions",
        "",
        f"- {os.cpu_count()} CPU cores ({_cpu_model()}), {platform.system()} "
        f"{platform.release()}; other work may have run at the same time, so every number is a "
        "median over repeats (interleaved where the variants share the machine).",
        f"- Python {platform.python_version()}, ZenML {_version('zenml')}, MLflow "
        f"{_version('mlflow')}, BentoML {_version('bentoml')}, scikit-learn "
        f"{_version('scikit-learn')}, zenml-model-deployers {_version('zenml-model-deployers')}.",
        "- Everything ran on 127.0.0.1, in a fresh ZenML store per benchmark "
        "(ZENML_CONFIG_PATH in a temporary directory, analytics off), with two tiny MLflow "
        'models (sklearn `DummyClassifier(strategy="constant")` predicting 0 and 1).',
        "- Baseline: ZenML 0.98's built-in MLflow model deployer (`MLFlowModelDeployer`, "
        "`MLFlowDeploymentService`) from a stack with the `mlflow` model deployer and the "
        "`mlflow` experiment tracker its serving daemon requires, in the same environment; "
        "for BentoML, raw `bentoml serve` and ZenML 0.98's built-in BentoML model deployer "
        "(`BentoMLModelDeployer`, flavor `bentoml`) on the same bento, in a BentoML store "
        "inside the temporary directory.",
        "",
        "## Goals",
        "",
        c.md_table(
            ["benchmark", "goal", "measured", "met"],
            [
                [
                    title,
                    g["goal"],
                    g["value"],
                    "yes" if g["met"] else ("n/a" if g["met"] is None else "**no**"),
                ]
                for title, g in goals
            ],
        ),
        "",
        f"{met} of {len(goals)} goals met.",
        "",
    ]
    for r in results:
        lines.append(c.result_markdown(r, level=2))
        lines.append(f"_Run time of this benchmark: {r.get('elapsed_s', '?')} s._")
        lines.append("")
    for section in carried_sections(old, {r["title"] for r in results}):
        lines += [section]
    lines += [
        "## Reproduce",
        "",
        "`make bench` (the benchmarks above whose sections say their run time; the others' "
        "sections are kept as they were), or one benchmark alone: `.venv/bin/python "
        "bench/bench_deploy.py` ("
        + ", ".join(f"`{n}.py`" for n in BENCHES[1:] + STANDALONE)
        + "; `bench/gpu/bench_vllm_gpu.py` on a GPU host, not run here). Each creates its own "
        "temporary ZenML store, ends every process it started, and removes the store.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    """Runs all benchmarks and writes docs/benchmarks.md."""
    started = time.monotonic()
    results = []
    with tempfile.TemporaryDirectory(prefix="zmd-bench-results-") as tmp:
        for name in BENCHES:
            results.append(_run_one(name, Path(tmp)))
    total = time.monotonic() - started
    old = OUT.read_text() if OUT.exists() else ""
    OUT.write_text(_document(results, total, old))
    print(f"\nwrote {OUT.relative_to(c.REPO)} ({total / 60:.1f} min)", flush=True)
    return 0 if all(r.get("tables") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
