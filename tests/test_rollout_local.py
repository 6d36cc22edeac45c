"""Canaries and progressive rollouts of local deployments: the relay splits requests between
two revisions' servers and counts them; the lifecycle walks the rollout's steps on those
counts. Real relay, real lifecycle and service store, a tiny toy server (tests/local_toy.py).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
from local_toy import LocalToyDeployer, local_toy_deployer, toy_config
from zenml import pipeline, step
from zenml.client import Client as ZenClient
from zenml_model_deployers.steps._body import deploy_with

from zenml_model_deployers.errors import RolloutFailedError
from zenml_model_deployers.local.service import LocalProcessService

FAST = {"interval": 1.0, "min_requests": 10}


class Client:
    """Loops on the deployment's URL from two threads; records every answer or failure."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.log: list[tuple[float, int, str]] = []  # (time, status, prediction or error)
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._loop) for _ in range(2)]
        for t in self.threads:
            t.start()

    def _loop(self) -> None:
        s = requests.Session()
        deadline = time.monotonic() + 60  # bounded whatever happens
        while not self.stop.is_set() and time.monotonic() < deadline:
            try:
                r = s.post(self.url, json={"x": 1}, timeout=5)
                what = r.json().get("predictions", [r.text])[0] if r.status_code == 200 else r.text
                self.log.append((time.monotonic(), r.status_code, str(what)))
            except requests.RequestException as e:
                self.log.append((time.monotonic(), 0, repr(e)))
            time.sleep(0.002)

    def finish(self) -> list[tuple[float, int, str]]:
        self.stop.set()
        for t in self.threads:
            t.join(30)
        return self.log


@pytest.fixture(scope="module")
def deployer(zenml_env: Path) -> LocalToyDeployer:
    return local_toy_deployer()


@pytest.fixture(scope="module")
def deployed(deployer: LocalToyDeployer) -> Iterator[LocalProcessService]:
    """One deployment shared by the module's tests, serving toy://v1 at the start of each."""
    svc = deployer.deploy(toy_config("roll", "toy://v1"))
    assert isinstance(svc, LocalProcessService)
    yield svc
    live = deployer.find_deployment("roll")
    if live is not None:
        deployer.delete(live)


def _current(deployer: LocalToyDeployer) -> LocalProcessService:
    svc = deployer.find_deployment("roll")
    assert isinstance(svc, LocalProcessService)
    return svc


def test_local_canary_split_and_rollback(deployer: LocalToyDeployer, deployed: Any) -> None:
    svc = deployer.deploy(toy_config("roll", "toy://v2"), canary_percent=25)
    assert isinstance(svc, LocalProcessService) and svc.status.canary_server is not None
    canary_pid = svc.status.canary_server.pid
    picks = Counter(svc.predict({"x": 1}) for _ in range(200))
    # The relay splits per request, evenly: the observed share is the configured one.
    assert abs(picks["v2"] - 50) <= 2 and picks["v1"] + picks["v2"] == 200
    metrics = svc.read_revision_metrics(window=60)
    v2 = toy_config("roll", "toy://v2").config_hash()
    assert abs(metrics[v2].requests - 50) <= 2 and metrics[v2].errors == 0

    svc = deployer.rollback(_current(deployer))
    assert {svc.predict({}) for _ in range(20)} == {"v1"}
    assert not psutil.pid_exists(canary_pid) or psutil.Process(canary_pid).status() == "zombie"
    assert svc.status.canary_server is None


def test_healthy_candidate_promoted_through_every_step(
    deployer: LocalToyDeployer, deployed: LocalProcessService
) -> None:
    before = _current(deployer)
    client = Client(before.prediction_url or "")
    t0 = time.monotonic()
    svc = deployer.deploy(
        toy_config("roll", "toy://v3"), policy="canary", rollout={**FAST, "max_p95_ratio": 20}
    )
    took = time.monotonic() - t0
    time.sleep(0.3)
    log = client.finish()
    record = svc.last_rollout
    assert record.verdict == "promoted" and [s.percent for s in record.steps] == [10, 50, 100]
    assert all(s.passed for s in record.steps)
    # Every step's observed split is its configured share, within a few percent.
    for s in record.steps[:2]:
        total = s.candidate.requests + s.stable.requests
        assert total >= 20 and abs(100 * s.candidate.requests / total - s.percent) <= 5, s
    failed = [e for e in log if e[1] != 200]
    assert failed == [] and len(log) > 100
    assert log[-1][2] == "v3" and svc.config.model_uri == "toy://v3"
    assert svc.status.revision == before.status.revision + 1
    assert _current(deployer).config.model_uri == "toy://v3"
    # Bounded: three 1 s bakes and what the rollout adds beyond them.
    assert record.overhead_s < 10 and took < 3 + 10
    print(f"rollout: {took:.2f} s, {record.overhead_s:.2f} s beyond the bakes")


def test_failing_candidate_is_rolled_back_errors_only_from_its_share(
    deployer: LocalToyDeployer, deployed: LocalProcessService
) -> None:
    stable = _current(deployer)
    client = Client(stable.prediction_url or "")
    with pytest.raises(RolloutFailedError, match="error rate") as ei:
        deployer.deploy(toy_config("roll", "toy://bad?err=50"), policy="canary", rollout=FAST)
    t_back = time.monotonic()
    time.sleep(0.5)
    log = client.finish()
    record = ei.value.rollout
    assert record.verdict == "rolled_back" and len(record.steps) == 1
    step = record.steps[0]
    assert step.percent == 10 and step.gates[1].passed is False
    # Errors came only from the candidate's share (10% of requests, half of which fail) and
    # none after the rollback.
    failed = [e for e in log if e[1] != 200]
    served_bad = [e for e in log if "bad" in e[2]]
    assert failed and all(e[1] == 500 and "bad failed" in e[2] for e in failed)
    assert len(failed) <= 0.1 * len(log)
    assert abs(len(served_bad) - 2 * len(failed)) <= 2  # the candidate fails half of its own
    assert not [e for e in failed if e[0] > t_back]
    print(f"failing step: {len(failed)} failed of {len(log)} requests")
    live = _current(deployer)
    assert live.config.model_uri == stable.config.model_uri
    assert live.canary_candidate() is None and live.status.canary_server is None


def test_slow_candidate_fails_the_latency_gate(
    deployer: LocalToyDeployer, deployed: LocalProcessService
) -> None:
    stable = _current(deployer)
    client = Client(stable.prediction_url or "")
    try:
        with pytest.raises(RolloutFailedError, match="p95") as ei:
            deployer.deploy(
                toy_config("roll", "toy://slow?delay=60"),
                policy="canary",
                rollout={**FAST, "steps": [50, 100], "max_p95_ratio": 3},
            )
    finally:
        log = client.finish()
    step = ei.value.rollout.steps[0]
    assert step.gates[2].passed is False and step.gates[2].value > 3
    assert [e for e in log if e[1] != 200] == []
    assert _current(deployer).config.model_uri == stable.config.model_uri


def test_stats_in_the_cli_and_prometheus(
    deployer: LocalToyDeployer, deployed: LocalProcessService
) -> None:
    import json

    from click.testing import CliRunner
    from prometheus_client.parser import text_string_to_metric_families

    from zenml_model_deployers.cli import main as zmd
    from zenml_model_deployers.local.fastlist import row_stats

    svc = _current(deployer)
    for _ in range(30):
        svc.predict({"x": 1})
    rev = svc.status.config_hash
    res = CliRunner().invoke(zmd, ["models", "describe", "roll", "--stats", "-o", "json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    stats = info["stats"][rev]
    assert stats["requests"] >= 30 and stats["error_rate"] == 0.0
    assert stats["p50_ms"] > 0 and stats["req_per_s"] > 0
    res = CliRunner().invoke(zmd, ["models", "list", "--stats", "-o", "json"])
    row = next(r for r in json.loads(res.output) if r["name"] == "roll")
    assert row["stats"][rev]["requests"] >= 30
    res = CliRunner().invoke(zmd, ["models", "list", "--stats"])
    assert res.exit_code == 0 and rev[:12] in res.output and "P95 MS" in res.output
    # The fast path (no ZenML) reads the same counters from the relay.
    fast = row_stats(
        {"status": svc.status.model_dump(mode="json"), "state": "active", "workdir": svc.workdir}
    )
    assert fast is not None and fast[rev]["requests"] >= 30
    # Prometheus, on the metrics port only.
    text = requests.get(info["metrics_url"], timeout=5).text
    samples = [
        s
        for f in text_string_to_metric_families(text)
        if f.name == "zmd_relay_requests"
        for s in f.samples
        if s.labels == {"deployment": "roll", "revision": rev}
    ]
    assert samples and samples[0].value >= 30


@step(enable_cache=False)
def roll_out(model_uri: str) -> None:
    """The deploy step's body (what every typed deploy step runs) with the toy flavor."""
    deploy_with(
        local_toy_deployer(),
        model_uri=model_uri,
        deployment_name="roll",
        policy="canary",
        rollout={**FAST, "steps": [50, 100]},
    )


@pipeline(enable_cache=False)
def rollout_pipeline() -> None:
    roll_out(model_uri="toy://broken?err=100")


def test_a_rolled_back_rollout_is_recorded_on_the_failed_step(
    deployer: LocalToyDeployer, deployed: LocalProcessService
) -> None:
    """The deploy step records run metadata `rollout` and the HTML view (an artifact the
    dashboard shows) also when the rollout is rolled back and the step fails."""
    stable = _current(deployer)
    looper = Client(stable.prediction_url or "")
    try:
        with pytest.raises(RuntimeError):
            rollout_pipeline.with_options(run_name="rollout-rolled-back")()
    finally:
        looper.finish()
    zen = ZenClient()
    run = zen.get_pipeline_run("rollout-rolled-back")
    assert run.status.value == "failed"
    md = run.steps["roll_out"].run_metadata["rollout"]
    assert md["verdict"] == "rolled_back" and md["steps"][0]["percent"] == 50
    assert md["steps"][0]["gates"][1]["passed"] is False and "error rate" in md["reason"]
    html = zen.get_artifact_version("roll_rollout").load()
    assert "rolled_back" in html and "<table" in html
    assert _current(deployer).config.model_uri == stable.config.model_uri
