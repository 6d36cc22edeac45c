"""One deployment's read commands: `zmd models describe|get-url|logs` vs ZenML's own.

50 `zmd-mlflow` service rows are written into an isolated ZenML store (stopped deployments, as
``bench_list`` writes them); one of them gets a 2,000-line server log. Then, as subprocesses (a
fresh interpreter each, as a user runs them), median of 3 after one untimed warm-up run,
interleaved:

- ``zmd models describe NAME`` / ``get-url NAME`` / ``logs NAME --tail 100`` as shipped (the
  read-only SQLite fast path, ``local/fastlist.py``), and with ``ZMD_FAST_LIST=0`` (ZenML's
  client path, what they fall back to on other stores); outputs compared: same or not;
- ``zenml model-deployer models describe|get-url|logs <service id>`` with the stack's model
  deployer `zmd-mlflow`.

Goal (issue 8): each zmd command <= 0.5 s and <= 1/5 of ZenML's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as c  # noqa: E402

ROWS = 50
REPEATS = 3
CMD_TIMEOUT = 300
TARGET = "bench-list-007"


def _run(argv: list[str], env: dict[str, str]) -> tuple[float, str, str]:
    """(seconds, stdout, stdout + stderr) of one command run as a subprocess."""
    t = time.perf_counter()
    r = subprocess.run(
        argv, capture_output=True, text=True, timeout=CMD_TIMEOUT, env=env, stdin=subprocess.DEVNULL
    )
    dt = time.perf_counter() - t
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:5])} exited {r.returncode}: {r.stderr[-500:]}")
    return dt, r.stdout, r.stdout + r.stderr


def measure(
    commands: dict[str, tuple[list[str], list[str]]],
) -> tuple[dict[str, float], dict[str, bool], dict[str, str], list[list[Any]]]:
    """Times each read command three ways, interleaved, plus two floors: `zmd ARGS` as shipped
    (fast path), `zmd ARGS` with ZMD_FAST_LIST=0 (ZenML's client path), `zenml ARGS2`.

    Args:
        commands: name -> (zmd arguments, zenml arguments).

    Returns:
        (medians by "name:variant", same stdout on both zmd paths by name, combined output by
        "name:variant" of the warm-up run, table rows).
    """
    env = dict(os.environ)
    env_client = {**env, "ZMD_FAST_LIST": "0"}
    zmd, zenml = str(c.VENV_BIN / "zmd"), str(c.VENV_BIN / "zenml")
    variants: dict[str, tuple[list[str], dict[str, str]]] = {}
    for cmd, (ours, theirs) in commands.items():
        variants[f"{cmd}:zmd"] = ([zmd, *ours], env)
        variants[f"{cmd}:zmd_client"] = ([zmd, *ours], env_client)
        variants[f"{cmd}:zenml"] = ([zenml, *theirs], env)
    variants["floor:python"] = ([c.PYTHON, "-c", "pass"], env)
    variants["floor:zmd_help"] = ([zmd, "--help"], env)
    stdout: dict[str, str] = {}
    combined: dict[str, str] = {}
    for k, (argv, e) in variants.items():  # warm-up; outputs for the comparison
        _, stdout[k], combined[k] = _run(argv, e)
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(REPEATS):
        for k, (argv, e) in variants.items():
            times[k].append(_run(argv, e)[0])
    med = {k: c.median(v) for k, v in times.items()}
    print(f"  medians: {med}", file=sys.stderr, flush=True)
    same = {cmd: stdout[f"{cmd}:zmd"] == stdout[f"{cmd}:zmd_client"] for cmd in commands}
    labels = [
        (f"{cmd}:{v}", label)
        for cmd in commands
        for v, label in (
            ("zmd", f"`zmd models {cmd}`"),
            ("zmd_client", f"`zmd models {cmd}`, ZMD_FAST_LIST=0 (ZenML client path)"),
            ("zenml", f"`zenml model-deployer models {cmd}`"),
        )
    ]
    labels += [
        ("floor:python", "floor: `python -c pass`"),
        ("floor:zmd_help", "floor: `zmd --help` (imports no ZenML)"),
    ]
    rows = [
        [label, ", ".join(f"{x:.2f}" for x in times[k]), c.fmt_s(med[k])] for k, label in labels
    ]
    return med, same, combined, rows


def run() -> dict[str, Any]:
    """Runs the benchmark (inside an isolated env) and returns its result."""
    root = c.isolated_env("read")
    c.zmd_stack()
    from bench_list import _create_zmd_rows

    from zenml_model_deployers.flavors import get_deployer

    _create_zmd_rows(ROWS)
    deployer = get_deployer("zmd-mlflow")
    svc = deployer.find_deployment(TARGET)
    assert svc is not None
    log = root / "server.log"
    log.write_text(
        "".join(f'INFO:     127.0.0.1:5{i:04d} - "POST /invocations" 200\n' for i in range(2000))
    )
    svc.status.log_path = str(log)
    deployer.persist(svc)
    sid = str(svc.uuid)
    commands = {
        "describe": (["models", "describe", TARGET], ["model-deployer", "models", "describe", sid]),
        "get-url": (["models", "get-url", TARGET], ["model-deployer", "models", "get-url", sid]),
        "logs": (
            ["models", "logs", TARGET, "--tail", "100"],
            ["model-deployer", "models", "logs", sid, "--tail", "100"],
        ),
    }
    med, same, _, rows = measure(commands)
    goals = []
    for cmd in commands:
        ours, client, theirs = (med[f"{cmd}:{v}"] for v in ("zmd", "zmd_client", "zenml"))
        goals.append(
            {
                "goal": f"`zmd models {cmd}` <= 0.5 s and <= 1/5 of `zenml model-deployer models {cmd}`",
                "value": f"{ours:.2f} s, {ours / theirs:.2f}x ({theirs:.2f} s)",
                "met": ours <= 0.5 and ours <= theirs / 5,
            }
        )
        goals.append(
            {
                "goal": f"`zmd models {cmd}`: same output with and without the fast path",
                "value": f"{'same' if same[cmd] else 'different'} (client path {client:.2f} s)",
                "met": same[cmd],
            }
        )
    return {
        "name": "read",
        "title": "Read one deployment: `zmd models describe|get-url|logs` vs ZenML's",
        "method": (
            f"{ROWS} `zmd-mlflow` service rows (stopped deployments) in an isolated store; the "
            f"commands read `{TARGET}` (by name for zmd, by service id for ZenML, which takes "
            "only ids), whose server log has 2,000 lines (`--tail 100`). Each command runs as a "
            f"subprocess; median of {REPEATS} after one untimed warm-up run, interleaved."
        ),
        "tables": [{"headers": ["command", "runs (s)", "median"], "rows": rows}],
        "goals": goals,
        "notes": [
            "The fast path reads ZenML's SQLite store read-only with `sqlite3` and checks process "
            "liveness (and the front's supervision record) without importing ZenML; on any other "
            "store, or for remote flavors, the commands take ZenML's client path (the "
            "`ZMD_FAST_LIST=0` rows).",
        ],
    }


if __name__ == "__main__":
    c.main_for("read", run)
