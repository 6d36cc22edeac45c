"""One deployment's read commands: `zmd models describe|get-url|logs` vs ZenML's own.

50 `zmd-mlflow` service rows are written into an isolated ZenML store (stopped deployments, as
``bench_list`` writes them); one of them gets a 2,000-line server log. Then, as subprocesses (a
fresh interpreter each, as a user runs them), median of 5 after one untimed warm-up run,
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
REPEATS = 5
CMD_TIMEOUT = 300
TARGET = "bench-list-007"


def _run(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    t = time.perf_counter()
    r = subprocess.run(
        argv, capture_output=True, text=True, timeout=CMD_TIMEOUT, env=env, stdin=subprocess.DEVNULL
    )
    dt = time.perf_counter() - t
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:5])} exited {r.returncode}: {r.stderr[-500:]}")
    return dt, r.stdout


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

    env = dict(os.environ)
    env_client = {**env, "ZMD_FAST_LIST": "0"}
    zmd = str(c.VENV_BIN / "zmd")
    zenml = str(c.VENV_BIN / "zenml")
    commands = {
        "describe": (["models", "describe", TARGET], ["model-deployer", "models", "describe", sid]),
        "get-url": (["models", "get-url", TARGET], ["model-deployer", "models", "get-url", sid]),
        "logs": (
            ["models", "logs", TARGET, "--tail", "100"],
            ["model-deployer", "models", "logs", sid, "--tail", "100"],
        ),
    }
    variants: dict[str, tuple[list[str], dict[str, str]]] = {}
    for cmd, (ours, theirs) in commands.items():
        variants[f"{cmd}:zmd"] = ([zmd, *ours], env)
        variants[f"{cmd}:zmd_client"] = ([zmd, *ours], env_client)
        variants[f"{cmd}:zenml"] = ([zenml, *theirs], env)
    outputs: dict[str, str] = {}
    for k, (argv, e) in variants.items():  # warm-up; outputs for the comparison
        outputs[k] = _run(argv, e)[1]
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(REPEATS):
        for k, (argv, e) in variants.items():
            times[k].append(_run(argv, e)[0])
    med = {k: c.median(v) for k, v in times.items()}
    print(f"  medians: {med}", file=sys.stderr, flush=True)

    rows, goals = [], []
    for cmd in commands:
        same = outputs[f"{cmd}:zmd"] == outputs[f"{cmd}:zmd_client"]
        ours, client, theirs = (med[f"{cmd}:{v}"] for v in ("zmd", "zmd_client", "zenml"))
        for v, label in (
            ("zmd", f"`zmd models {cmd}`"),
            ("zmd_client", f"`zmd models {cmd}`, ZMD_FAST_LIST=0 (ZenML client path)"),
            ("zenml", f"`zenml model-deployer models {cmd}`"),
        ):
            k = f"{cmd}:{v}"
            rows.append([label, ", ".join(f"{x:.2f}" for x in times[k]), c.fmt_s(med[k])])
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
                "value": f"{'same' if same else 'different'} (client path {client:.2f} s)",
                "met": same,
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
