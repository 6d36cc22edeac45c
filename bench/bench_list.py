"""Listing 200 deployments: `zmd models list` vs `zenml model-deployer models list`.

200 service rows of our `zmd-mlflow` service are written straight into an isolated ZenML store
(``Client().create_service`` + ``Client().update_service`` with the fields
``BaseDeployer.persist`` writes), as stopped deployments (state inactive, URL recorded). Then,
as subprocesses (a fresh interpreter each, as a user runs them), median of 3 after one
untimed warm-up run each:

- ``.venv/bin/zmd models list`` (lists all 200), as shipped (it may take its read-only SQLite
  fast path, ``local/fastlist.py``), and with ``ZMD_FAST_LIST=0`` (ZenML's client path, what it
  falls back to on other stores); both ``-o json`` outputs are compared: same rows or not;
- ``.venv/bin/zenml model-deployer models list`` with the stack's model deployer `zmd-mlflow`
  (ZenML lists only its default page of 20 rows), and the same with
  ``ZENML_PAGINATION_DEFAULT_LIMIT=200`` so that it lists all 200 too;
- floors: ``python -c "import zenml"`` and ``Client().list_services(size=1)`` (import ZenML,
  open the store, one query), and ``zmd --help`` (no ZenML import).

Where the client path spends its time is measured phase by phase in a fresh interpreter
(import, store open, query, ``BaseService.from_model``, ``update_status``, rendering, exit);
the largest imports of `zmd models list` as shipped come from ``python -X importtime``; and, as
an experiment (not the product), the client path runs with the cyclic garbage collector off
while ZenML loads and frozen at exit.

Then the 200 rows are replaced by 200 rows of ZenML's own ``MLFlowDeploymentService`` and
``zenml model-deployer models list`` is timed on them with a stack whose model deployer is the
built-in `mlflow` one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as c  # noqa: E402

ROWS = 200
REPEATS = 3
CMD_TIMEOUT = 300
EXIT_PHASE = "interpreter exit (module teardown + final garbage collection)"

PHASES = r"""
import json, time, io
t0 = time.perf_counter(); ph = {}
import zenml_model_deployers.cli as cli
from zenml.client import Client
from zenml.services.service import BaseService
ph["import zenml (+ zmd cli)"] = time.perf_counter() - t0; t = time.perf_counter()
client = Client(); client.zen_store; client.active_project
ph["open the store (config, DB, migrations check, project)"] = time.perf_counter() - t
t = time.perf_counter()
page = client.list_services(page=1, size=1000, hydrate=True, sort_by="desc:created")
ph["list_services query (200 rows, hydrated)"] = time.perf_counter() - t; t = time.perf_counter()
svcs = [BaseService.from_model(r) for r in page.items]
ph["BaseService.from_model x200"] = time.perf_counter() - t; t = time.perf_counter()
for s in svcs:
    s.update_status()
ph["update_status x200 (process liveness)"] = time.perf_counter() - t; t = time.perf_counter()
from rich.console import Console
from rich.table import Table
rows = [cli._row(s) for s in svcs]
table = Table(box=None, pad_edge=False)
for col in ("ID", "NAME", "FLAVOR", "STATE", "MODEL", "REV", "URL"):
    table.add_column(col, overflow="fold")
for r in rows:
    table.add_row(r["id"][:8], r["name"], r["flavor"], r["state"], r["model"], str(r["revision"]), r["url"] or "-")
Console(width=200, file=io.StringIO()).print(table)
ph["rows + rich table"] = time.perf_counter() - t
ph["total in-process"] = time.perf_counter() - t0
print("PHASES" + json.dumps(ph))
print("END %.6f" % time.time(), flush=True)
"""

# The same command with the cyclic GC off while ZenML loads and frozen at exit: an experiment
# (not what the product does) to size what garbage collection costs a short CLI run.
NOGC = """import atexit, gc, os, sys
os.environ["ZMD_FAST_LIST"] = "0"
gc.disable()
atexit.register(gc.freeze)
from zenml_model_deployers.cli import main
sys.argv = ["zmd", "models", "list"]
main()
"""


def _timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    t = time.perf_counter()
    r = subprocess.run(
        argv, capture_output=True, text=True, timeout=CMD_TIMEOUT, env=env, stdin=subprocess.DEVNULL
    )
    dt = time.perf_counter() - t
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} exited {r.returncode}: {r.stderr[-500:]}")
    return dt, r.stdout + r.stderr


def _stdout(argv: list[str], env: dict[str, str]) -> str:
    r = subprocess.run(
        argv, capture_output=True, text=True, timeout=CMD_TIMEOUT, env=env, stdin=subprocess.DEVNULL
    )
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} exited {r.returncode}: {r.stderr[-500:]}")
    return r.stdout


def _count_rows(out: str, needle: str) -> int:
    return sum(1 for ln in out.splitlines() if needle in ln)


def _create_zmd_rows(n: int) -> list[Any]:
    from zenml.client import Client
    from zenml.enums import ServiceState

    from zenml_model_deployers.flavors import get_deployer
    from zenml_model_deployers.flavors.mlflow.service import (
        MLflowDeploymentConfig,
        MLflowDeploymentService,
    )
    from zenml_model_deployers.local.service import LocalDeploymentStatus

    client = Client()
    deployer = get_deployer("zmd-mlflow")
    ids = []
    for i in range(n):
        cfg = MLflowDeploymentConfig(
            deployment_name=f"bench-list-{i:03d}",
            model_uri=f"/models/model-{i}",
            model_name=f"model-{i % 10}",
            pipeline_name="bench",
            pipeline_step_name="deploy",
        )
        resp = client.create_service(config=cfg, service_type=MLflowDeploymentService.SERVICE_TYPE)
        svc = MLflowDeploymentService(
            uuid=resp.id,
            config=cfg,
            status=LocalDeploymentStatus(state=ServiceState.PENDING_STARTUP),
            admin_state=ServiceState.ACTIVE,
        )
        # A deployment that served (revision 1 on a recorded URL) and was stopped.
        svc.status.url = f"http://127.0.0.1:{20000 + i}"
        svc.status.public_port = 20000 + i
        svc.status.revision = 1
        svc.mark_ready()
        svc.status.update_state(ServiceState.INACTIVE, "")
        svc.admin_state = ServiceState.INACTIVE
        deployer.persist(svc)
        ids.append(resp.id)
    return ids


def _create_builtin_rows(n: int) -> None:
    from zenml.client import Client
    from zenml.integrations.mlflow.services.mlflow_deployment import (
        MLFlowDeploymentConfig,
        MLFlowDeploymentService,
    )

    client = Client()
    for i in range(n):
        cfg = MLFlowDeploymentConfig(
            model_name=f"model-{i % 10}",
            model_uri=f"/models/model-{i}",
            pipeline_name="bench",
            pipeline_step_name=f"deploy-{i}",
        )
        resp = client.create_service(config=cfg, service_type=MLFlowDeploymentService.SERVICE_TYPE)
        svc = MLFlowDeploymentService(uuid=resp.id, config=cfg)
        client.update_service(  # what BaseModelDeployer.deploy_model writes
            id=svc.uuid,
            name=svc.config.service_name,
            service_source=svc.model_dump().get("type"),
            admin_state=svc.admin_state,
            status=svc.status.model_dump(),
            endpoint=svc.endpoint.model_dump() if svc.endpoint else None,
            prediction_url=None,
            health_check_url=None,
        )


def _importtime_top(n: int = 6) -> list[list[str]]:
    r = subprocess.run(
        [c.PYTHON, "-X", "importtime", "-m", "zenml_model_deployers.cli", "models", "list"],
        capture_output=True,
        text=True,
        timeout=CMD_TIMEOUT,
    )
    entries = []
    for ln in r.stderr.splitlines():
        if not ln.startswith("import time:"):
            continue
        parts = ln[len("import time:") :].split("|")
        if len(parts) != 3:
            continue
        try:
            cum = int(parts[1])
        except ValueError:  # the header line
            continue
        entries.append((cum, 0, parts[2][1:]))  # nested imports keep their indentation
    # top-level packages only (no leading indentation): what `zmd` pulls in
    top = sorted((e for e in entries if not e[2].startswith(" ")), reverse=True)[:n]
    return [[name.strip(), f"{cum / 1e6:.2f} s"] for cum, _, name in top]


def _list_notes(
    med: dict[str, float], phases: dict[str, float], own: float, fast_path: bool, share: float
) -> list[str]:
    notes = []
    if fast_path:
        notes.append(
            f"As shipped, `zmd models list` imports no ZenML (see its imports): it reads the "
            f"local SQLite store read-only (`local/fastlist.py`), {c.fmt_s(med['zmd'])}. "
            f"Where that path does not apply (other stores, remote flavors, "
            f"ZMD_FAST_LIST=0) it takes ZenML's client path: {c.fmt_s(med['zmd_client'])}, "
            f"{med['zmd_client'] / med['zenml']:.2f}x of zenml's time, not 1/3."
        )
    notes.append(
        f"A process that only imports ZenML, opens its store and runs one query "
        f"(`Client().list_services(size=1)`) takes {c.fmt_s(med['store_floor'])}, "
        f"{share:.0%} of the client path's. Its own work (query, loading the 200 services, "
        f"their status, the table) is {c.fmt_s(own)}; the rest is what every ZenML client "
        "process pays: importing ZenML, opening the store, and exiting."
    )
    notes.append(
        f"Of the client path's time, {c.fmt_s(phases.get(EXIT_PHASE, float('nan')))} is spent "
        "*after* the work, tearing down the interpreter (final garbage collection over the "
        "objects ZenML creates on import); the cyclic GC also runs often during the import. "
        "With the GC off while loading and frozen at exit (experiment row) the client path "
        f"takes {c.fmt_s(med['zmd_nogc'])} instead of {c.fmt_s(med['zmd_client'])}."
    )
    return notes


def run() -> dict[str, Any]:
    """Runs the benchmark (inside an isolated env) and returns its result."""
    c.isolated_env("list")
    c.zmd_stack()
    from zenml.client import Client

    t = time.perf_counter()
    ids = _create_zmd_rows(ROWS)
    create_s = time.perf_counter() - t
    print(f"  created {ROWS} rows in {create_s:.1f} s", file=sys.stderr, flush=True)

    env = dict(os.environ)
    env_all = {**env, "ZENML_PAGINATION_DEFAULT_LIMIT": str(ROWS)}
    env_client = {**env, "ZMD_FAST_LIST": "0"}
    zmd = [str(c.VENV_BIN / "zmd"), "models", "list"]
    zenml = [str(c.VENV_BIN / "zenml"), "model-deployer", "models", "list"]
    nogc = Path.cwd() / "zmd_list_nogc.py"
    nogc.write_text(NOGC)
    cmds: dict[str, tuple[list[str], dict[str, str]]] = {
        "zmd": (zmd, env),
        "zmd_client": (zmd, env_client),
        "zenml": (zenml, env),
        "zenml_all": (zenml, env_all),
        "import_zenml": ([c.PYTHON, "-c", "import zenml"], env),
        "store_floor": (
            [c.PYTHON, "-c", "from zenml.client import Client; Client().list_services(size=1)"],
            env,
        ),
        "zmd_help": ([str(c.VENV_BIN / "zmd"), "--help"], env),
        "zmd_nogc": ([c.PYTHON, str(nogc)], env),
    }
    times: dict[str, list[float]] = {k: [] for k in cmds}
    shown: dict[str, int] = {}
    for k, (argv, e) in cmds.items():  # warm-up (bytecode, page cache); also row counts
        _, out = _timed(argv, e)
        if k.startswith("zmd") and k != "zmd_help":
            shown[k] = _count_rows(out, "zmd-mlflow")
        elif k.startswith("zenml"):
            shown[k] = _count_rows(out, "zmd-mlfl")
    for _ in range(REPEATS):
        for k, (argv, e) in cmds.items():
            times[k].append(_timed(argv, e)[0])
    med = {k: c.median(v) for k, v in times.items()}
    print(f"  medians: {med}", file=sys.stderr, flush=True)

    # Same rows on both paths? (the fast path must show what ZenML's client path shows)
    fast_rows = json.loads(_stdout([*zmd, "-o", "json"], env) or "[]")
    client_rows = json.loads(_stdout([*zmd, "-o", "json"], env_client) or "[]")
    same_rows = fast_rows == client_rows and len(fast_rows) == ROWS

    # Where the client path's time goes.
    # (a file, not `python -c`: ZenML's source loading needs a main module with a file)
    script = Path.cwd() / "zmd_list_phases.py"
    script.write_text(PHASES)
    phase_runs: list[dict[str, float]] = []
    for _ in range(REPEATS):
        t0 = time.time()
        r = subprocess.run(
            [c.PYTHON, str(script)], capture_output=True, text=True, timeout=CMD_TIMEOUT
        )
        t1 = time.time()
        ph: dict[str, float] = {}
        end = None
        for ln in r.stdout.splitlines():
            if ln.startswith("PHASES"):
                ph = json.loads(ln[len("PHASES") :])
            elif ln.startswith("END "):
                end = float(ln.split()[1])
        if not ph or end is None:
            print(f"  phase timing failed: {r.stderr[-1000:]}", file=sys.stderr)
            continue
        total = ph.pop("total in-process")
        ph[EXIT_PHASE] = t1 - end
        ph["interpreter start-up and the rest"] = max(0.0, (t1 - t0) - total - (t1 - end))
        ph["wall"] = t1 - t0
        phase_runs.append(ph)
    phases = {k: c.median(run[k] for run in phase_runs) for k in (phase_runs or [{}])[0]}
    imports = _importtime_top()

    # ZenML's own MLflow service rows, listed by ZenML's CLI (built-in model deployer).
    client = Client()
    for sid in ids:
        client.delete_service(sid)
    c.builtin_stack()
    _create_builtin_rows(ROWS)
    btimes: dict[str, list[float]] = {"zenml": [], "zenml_all": []}
    for k in btimes:
        _, out = _timed(cmds[k][0], cmds[k][1])
        shown[f"builtin_{k}"] = _count_rows(out, "mlflow")
    for _ in range(REPEATS):
        for k in btimes:
            btimes[k].append(_timed(cmds[k][0], cmds[k][1])[0])
    bmed = {k: c.median(v) for k, v in btimes.items()}

    ratio_default = med["zmd"] / med["zenml"]
    ratio_all = med["zmd"] / med["zenml_all"]

    def row(label: str, k: str, rows_shown: Any, src: dict[str, list[float]] = times) -> list[Any]:
        return [
            label,
            rows_shown,
            ", ".join(f"{x:.2f}" for x in src[k]),
            c.fmt_s(c.median(src[k])),
        ]

    table = [
        row("`zmd models list`", "zmd", shown.get("zmd")),
        row(
            "`zmd models list`, ZMD_FAST_LIST=0 (ZenML client path)",
            "zmd_client",
            shown.get("zmd_client"),
        ),
        row("`zenml model-deployer models list` (default page)", "zenml", shown.get("zenml")),
        row(
            "`zenml model-deployer models list`, ZENML_PAGINATION_DEFAULT_LIMIT=200",
            "zenml_all",
            shown.get("zenml_all"),
        ),
        row("floor: `python -c 'import zenml'`", "import_zenml", "-"),
        row("floor: import + open store + one `list_services(size=1)`", "store_floor", "-"),
        row("`zmd --help` (imports no ZenML)", "zmd_help", "-"),
        row(
            "experiment: client path with GC off during start-up, frozen at exit",
            "zmd_nogc",
            shown.get("zmd_nogc"),
        ),
    ]
    btable = [
        row(
            "`zenml model-deployer models list` (default page)",
            "zenml",
            shown.get("builtin_zenml"),
            btimes,
        ),
        row(
            "`zenml model-deployer models list`, ZENML_PAGINATION_DEFAULT_LIMIT=200",
            "zenml_all",
            shown.get("builtin_zenml_all"),
            btimes,
        ),
    ]
    phase_rows = [[k, f"{v:.3f} s"] for k, v in phases.items()]
    floor_share = med["store_floor"] / med["zmd_client"]
    own = sum(
        v
        for k, v in phases.items()
        if k.startswith(("list_services", "BaseService", "update_status", "rows"))
    )
    fast_path = not any(name.startswith("zenml.") or name == "zenml" for name, _ in imports)
    return {
        "name": "list",
        "title": f"List {ROWS} deployments: `zmd models list` vs `zenml model-deployer models list`",
        "method": (
            f"{ROWS} `zmd-mlflow` service rows (stopped deployments) written into an isolated "
            f"store ({create_s:.1f} s to write). Each command runs as a subprocess, as a user runs "
            f"it; median of {REPEATS} after one untimed warm-up run. Rows shown = table lines "
            "counted in the output."
        ),
        "tables": [
            {
                "caption": f"{ROWS} zmd-mlflow rows (stack model deployer: zmd-mlflow)",
                "headers": ["command", "rows shown", "runs (s)", "median"],
                "rows": table,
            },
            {
                "caption": "Where the client path (ZMD_FAST_LIST=0) spends its time (the same "
                f"work, phase by phase in a fresh interpreter; median of {REPEATS})",
                "headers": ["phase", "time"],
                "rows": phase_rows,
            },
            {
                "caption": "Largest top-level imports of `zmd models list` as shipped "
                "(`python -X importtime`, cumulative)",
                "headers": ["module", "cumulative"],
                "rows": imports,
            },
            {
                "caption": f"{ROWS} rows of ZenML's own MLFlowDeploymentService (stack model "
                "deployer: built-in mlflow)",
                "headers": ["command", "rows shown", "runs (s)", "median"],
                "rows": btable,
            },
        ],
        "goals": [
            {
                "goal": "zmd <= 1/3 of zenml's time (zenml's default page of 20 rows)",
                "value": f"{c.fmt_ratio(ratio_default)} ({c.fmt_s(med['zmd'])} vs "
                f"{c.fmt_s(med['zenml'])})",
                "met": ratio_default <= 1 / 3,
            },
            {
                "goal": "zmd <= 1/3 of zenml's time (both listing all 200 rows)",
                "value": f"{c.fmt_ratio(ratio_all)} ({c.fmt_s(med['zmd'])} vs "
                f"{c.fmt_s(med['zenml_all'])})",
                "met": ratio_all <= 1 / 3,
            },
            {
                "goal": "`zmd models list -o json`: same rows with and without the fast path",
                "value": f"{'same' if same_rows else 'DIFFERENT'} ({len(fast_rows)} vs "
                f"{len(client_rows)} rows)",
                "met": same_rows,
            },
        ],
        "notes": [
            *_list_notes(med, phases, own, fast_path, floor_share),
            "On ZenML's own MLFlowDeploymentService rows, `zenml model-deployer models list` "
            "is about a second slower still: loading that service class imports MLflow, pandas "
            "and numpy (`zenml.integrations.mlflow.services.mlflow_deployment`, ~0.9 s here), "
            "where our service class module loads in ~0.03 s.",
            "ZenML's `models list` shows only its default page (20 rows) of the 200 "
            "(`find_model_server` does not paginate); it lists all 200 only with "
            "ZENML_PAGINATION_DEFAULT_LIMIT raised.",
        ],
        "data": {
            "median": med,
            "builtin_median": bmed,
            "phases": phases,
            "ratio_default": ratio_default,
            "ratio_all": ratio_all,
            "shown": shown,
            "fast_path": fast_path,
            "same_rows": same_rows,
        },
    }


if __name__ == "__main__":
    c.main_for("list", run)
