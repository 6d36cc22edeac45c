"""Pipeline deployments (ZenML's Deployer): `zmd-local` vs ZenML's own `local` deployer.

A one-step pipeline (its step returns the version written in `greeting.py`) is deployed with
each deployer, then redeployed 3 times with a new version, as users do it:
`zenml pipeline deploy pl.demo -n NAME -u` in a subprocess, while a client thread loops
kept-alive `POST /invoke` on the URL recorded at the first deploy. Counted per redeploy: failed
requests (exception or non-200), the longest gap without a successful answer, the redeploy
call's duration, the time from the call's start to the first answer of the new version, and
answers of the old version after the first new one. Then `kill -9` of the serving server:
seconds until the URL answers again (bounded; ZenML's `local` deployer restarts nothing).
Medians of 3, both deployers in the same run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common as c  # noqa: E402

RUNS = 3
# ZMD_BENCH_PIPELINE_IDLE=1: also redeploys with no client (the call, then the first answer of
# the new version), before the redeploys under load.
IDLE = os.environ.get("ZMD_BENCH_PIPELINE_IDLE") == "1"
DEPLOY_TIMEOUT = 300  # a CLI deploy (both deployers) must return within this
SETTLE_S = 2.0  # keep looping this long after the call returned (and the new version answered)
LOOP_MAX_S = 400.0
HEAL_BOUND_S = 60.0  # zmd-local: kill -9 -> answering again, at most
BUILTIN_HEAL_BOUND_S = 20.0  # ZenML's local: how long we wait to see it not come back

PIPELINE = """
from greeting import VERSION
from zenml import pipeline, step


@step
def answer(x: int) -> str:
    return VERSION + ":" + str(x)


@pipeline
def demo(x: int = 1) -> str:
    return answer(x)
"""


class Looper(threading.Thread):
    """Loops POST /invoke with one kept-alive session; bounded in time."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.stop = threading.Event()
        self.records: list[tuple[float, bool, str]] = []  # (time, ok, output)

    def run(self) -> None:
        import requests

        deadline = time.monotonic() + LOOP_MAX_S
        with requests.Session() as s:
            while not self.stop.is_set() and time.monotonic() < deadline:
                try:
                    r = s.post(self.url, json={"parameters": {"x": 1}}, timeout=30)
                    ok = r.status_code == 200
                    out = str(r.json()["outputs"]["output"]) if ok else f"HTTP {r.status_code}"
                except Exception as e:  # noqa: BLE001 - any failure counts as one
                    ok, out = False, type(e).__name__
                self.records.append((time.monotonic(), ok, out))
                time.sleep(0.005)


def write_version(project: Path, version: str) -> None:
    (project / "greeting.py").write_text(f'VERSION = "{version}"\n', encoding="utf-8")


def cli_deploy(project: Path, name: str) -> float:
    """`zenml pipeline deploy pl.demo -n NAME -u` from the project; seconds it took."""
    t = time.monotonic()
    subprocess.run(
        [str(c.VENV_BIN / "zenml"), "pipeline", "deploy", "pl.demo", "-n", name, "-u"],
        cwd=project,
        check=True,
        timeout=DEPLOY_TIMEOUT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.monotonic() - t


def server_pid(name: str) -> int:
    from zenml.client import Client

    # Refreshed: after a restart by zmd-local's supervisor the recorded pid is the new one.
    meta = Client().refresh_deployment(name).deployment_metadata or {}
    return int(meta.get("server_pid") or meta["pid"])  # zmd-local | ZenML's local


def redeploy_once(project: Path, name: str, url: str, version: str) -> dict[str, Any]:
    write_version(project, version)
    loop = Looper(f"{url}/invoke")
    loop.start()
    time.sleep(1.0)
    start = time.monotonic()
    call_s = cli_deploy(project, name)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any(
        o.startswith(version) for _, _, o in loop.records
    ):
        time.sleep(0.1)
    time.sleep(SETTLE_S)
    loop.stop.set()
    loop.join(30)
    recs = loop.records
    failed = sum(not ok for _, ok, _ in recs)
    oks = [t for t, ok, _ in recs if ok]
    times = [start - 1.0, *oks, recs[-1][0] if recs else start]
    gap = max((b - a for a, b in zip(times, times[1:], strict=False)), default=0.0)
    new = [t for t, ok, o in recs if ok and o.startswith(version)]
    first_new = new[0] - start if new else None
    old_after = (
        sum(1 for t, ok, o in recs if ok and t > new[0] and not o.startswith(version)) if new else 0
    )
    return {
        "requests": len(recs),
        "failed": failed,
        "gap_s": gap,
        "call_s": call_s,
        "first_new_s": first_new,
        "old_after_new": old_after,
    }


def redeploy_idle(project: Path, name: str, url: str, version: str) -> dict[str, Any]:
    """A redeploy with no client: the call, then one request at a time until the new version
    answers (what the redeploy costs when the old server has no work)."""
    import requests

    write_version(project, version)
    start = time.monotonic()
    call_s = cli_deploy(project, name)
    first_new = None
    while time.monotonic() - start < DEPLOY_TIMEOUT:
        try:
            r = requests.post(f"{url}/invoke", json={"parameters": {"x": 1}}, timeout=30)
            if r.ok and str(r.json()["outputs"]["output"]).startswith(version):
                first_new = time.monotonic() - start
                break
        except requests.RequestException:
            pass
        time.sleep(0.05)
    return {"call_s": call_s, "first_new_s": first_new}


def heal_once(name: str, url: str, bound: float) -> float | None:
    import requests

    os.kill(server_pid(name), signal.SIGKILL)
    t = time.monotonic()
    while time.monotonic() - t < bound:
        try:
            if requests.post(f"{url}/invoke", json={"parameters": {"x": 2}}, timeout=10).ok:
                return time.monotonic() - t
        except requests.RequestException:
            pass
        time.sleep(0.1)
    return None


def register(project: Path) -> None:
    from click.testing import CliRunner

    from zenml_model_deployers.cli import main as zmd

    assert CliRunner().invoke(zmd, ["flavors", "register"]).exit_code == 0
    z = str(c.VENV_BIN / "zenml")
    for args in (
        ["deployer", "register", "local-zmd", "--flavor=zmd-local"],
        ["deployer", "register", "zenml-local", "--flavor=local"],
        ["stack", "register", "bench-zmd", "-o", "default", "-a", "default", "-D", "local-zmd"],
        ["stack", "register", "bench-local", "-o", "default", "-a", "default", "-D", "zenml-local"],
    ):
        subprocess.run([z, *args], cwd=project, check=True, stdout=subprocess.DEVNULL)


def run() -> dict[str, Any]:
    from zenml.client import Client

    project = Path.cwd() / "project"
    project.mkdir()
    (project / "pl.py").write_text(PIPELINE, encoding="utf-8")
    register(project)
    variants = {"zmd-local": ("bench-zmd", "pzmd"), "ZenML local": ("bench-local", "plocal")}
    out: dict[str, dict[str, list[Any]]] = {}
    idle: dict[str, dict[str, list[Any]]] = {}
    for label, (stack, name) in variants.items():
        Client().activate_stack(stack)
        write_version(project, "v0")
        cli_deploy(project, name)
        url = str(Client().get_deployment(name).url)
        if IDLE:
            runs = [redeploy_idle(project, name, url, f"i{i + 1}") for i in range(RUNS)]
            idle[label] = {k: [r[k] for r in runs] for k in runs[0]}
        runs = [redeploy_once(project, name, url, f"v{i + 1}") for i in range(RUNS)]
        bound = HEAL_BOUND_S if label == "zmd-local" else BUILTIN_HEAL_BOUND_S
        heals = [heal_once(name, url, bound) for _ in range(RUNS if label == "zmd-local" else 1)]
        out[label] = {k: [r[k] for r in runs] for k in runs[0]}
        out[label]["heal_s"] = heals
        subprocess.run(
            [str(c.VENV_BIN / "zenml"), "deployment", "delete", name, "-y", "--force"],
            cwd=project,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=120,
        )

    def med(label: str, key: str) -> float | None:
        vals = [v for v in out[label][key] if v is not None]
        return c.median(vals) if vals else None

    rows = []
    for label in variants:
        o = out[label]
        heals = o["heal_s"]
        healed = [h for h in heals if h is not None]
        rows.append(
            [
                label,
                c.median(o["requests"]),
                f"{c.median(o['failed']):.0f} ({', '.join(str(f) for f in o['failed'])})",
                f"{c.fmt_s(med(label, 'gap_s'))} ({', '.join(f'{g:.2f}' for g in o['gap_s'])})",
                c.fmt_s(med(label, "call_s")),
                c.fmt_s(med(label, "first_new_s")),
                max(o["old_after_new"]),
                c.fmt_s(c.median(healed))
                if len(healed) == len(heals)
                else f"not answering {BUILTIN_HEAL_BOUND_S:.0f} s later",
            ]
        )
    tables = []
    if idle:
        tables.append(
            {
                "caption": f"Redeploys with no client, medians of {RUNS} (per-run in brackets)",
                "headers": ["deployer", "redeploy call", "call start -> new version answers"],
                "rows": [
                    [
                        label,
                        f"{c.fmt_s(c.median(v['call_s']))} "
                        f"({', '.join(f'{x:.1f}' for x in v['call_s'])})",
                        f"{c.fmt_s(c.median([x for x in v['first_new_s'] if x is not None]))} "
                        f"({', '.join('-' if x is None else f'{x:.1f}' for x in v['first_new_s'])})",
                    ]
                    for label, v in idle.items()
                ],
            }
        )
    zmd_gap, builtin_gap = med("zmd-local", "gap_s"), med("ZenML local", "gap_s")
    zmd_new, builtin_new = med("zmd-local", "first_new_s"), med("ZenML local", "first_new_s")
    return {
        "name": "pipeline_deploy",
        "title": "Pipeline deployments: redeploy under load and self-heal, zmd-local vs ZenML local",
        "method": __doc__.split("\n\n", 1)[1].strip() if __doc__ else "",
        "tables": [
            *tables,
            {
                "caption": f"Medians of {RUNS} redeploys each (per-run values in brackets)",
                "headers": [
                    "deployer",
                    "requests",
                    "failed",
                    "longest gap without an answer",
                    "redeploy call",
                    "call start -> new version answers",
                    "old answers after the first new",
                    "kill -9 -> answering again",
                ],
                "rows": rows,
            },
        ],
        "goals": [
            {
                "goal": "0 failed requests on redeploy",
                "value": str(out["zmd-local"]["failed"]),
                "met": all(f == 0 for f in out["zmd-local"]["failed"]),
            },
            {
                "goal": "longest gap well under ZenML local's",
                "value": f"{c.fmt_s(zmd_gap)} vs {c.fmt_s(builtin_gap)}",
                "met": None if zmd_gap is None or builtin_gap is None else zmd_gap < builtin_gap,
            },
            {
                "goal": "new version answering no later than with ZenML local",
                "value": f"{c.fmt_s(zmd_new)} vs {c.fmt_s(builtin_new)}",
                "met": None if zmd_new is None or builtin_new is None else zmd_new <= builtin_new,
            },
        ],
        "notes": [f"load average at the end: {os.getloadavg()[0]:.1f} (2 cores)"],
        "raw": {"load": out, "idle": idle},
    }


if __name__ == "__main__":
    c.isolated_env("pipeline_deploy")
    c.main_for("pipeline_deploy", run)
