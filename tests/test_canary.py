"""The generic canary (deployer.py): canary_percent, promote, rollback, refusals -- through the
real lifecycle and ZenML's service store, on the in-memory toy backend (the Databricks tests
run the same verbs against the serving-endpoints double, routes observed on predictions)."""

from __future__ import annotations

from pathlib import Path

import pytest
from inplace_toy import BACKEND, ToyConfig, ToyService, toy_deployer

from zenml_model_deployers.errors import ConfigurationError, DeploymentError


def _cfg(model: str, name: str = "canary-a") -> ToyConfig:
    return ToyConfig(deployment_name=name, model_name=name, model_uri=model)


def test_canary_promote_rollback_and_refusals(zenml_env: Path) -> None:
    d = toy_deployer()
    d.deploy(_cfg("models:/m/1"))
    svc = d.deploy(_cfg("models:/m/2"), canary_percent=20)
    obj = BACKEND["canary-a"]
    assert obj.serving == {"models:/m/1": 80, "models:/m/2": 20}
    # The stable revision stays the recorded one; the candidate is recorded beside it.
    stored = d.find_deployment("canary-a")
    assert stored is not None
    assert stored.config.model_uri == "models:/m/1"
    assert stored.describe()["canary"] == {
        "config_hash": _cfg("models:/m/2").config_hash(),
        "model_uri": "models:/m/2",
        "percent": 20,
    }
    picks = [stored.predict(None) for _ in range(400)]
    assert 40 <= picks.count("models:/m/2") <= 120

    # Same canary again: nothing applied; another share: adjusted.
    applies = len(obj.applies)
    d.deploy(_cfg("models:/m/2"), canary_percent=20)
    assert len(obj.applies) == applies
    d.deploy(_cfg("models:/m/2"), canary_percent=50)
    assert obj.serving == {"models:/m/1": 50, "models:/m/2": 50}

    # Any other deploy waits until the canary is finished; the backend is untouched.
    for kwargs in ({}, {"canary_percent": 10}):
        with pytest.raises(ConfigurationError, match="promote canary-a"):
            d.deploy(_cfg("models:/m/3"), **kwargs)  # type: ignore[arg-type]
    assert obj.serving == {"models:/m/1": 50, "models:/m/2": 50}

    svc = d.find_deployment("canary-a")
    assert svc is not None
    revision = svc.status.revision
    d.promote(svc)
    assert obj.serving == {"models:/m/2": 100}
    svc = d.find_deployment("canary-a")
    assert svc is not None
    assert svc.config.model_uri == "models:/m/2"
    assert svc.status.revision == revision + 1
    assert svc.canary_candidate() is None
    with pytest.raises(ConfigurationError, match="runs no canary"):
        d.promote(svc)
    with pytest.raises(ConfigurationError, match="runs no canary"):
        d.rollback(svc)

    d.deploy(_cfg("models:/m/3"), canary_percent=10)
    assert obj.serving == {"models:/m/2": 90, "models:/m/3": 10}
    svc = d.find_deployment("canary-a")
    assert svc is not None
    d.rollback(svc)
    assert obj.serving == {"models:/m/2": 100}
    svc = d.find_deployment("canary-a")
    assert svc is not None
    assert svc.config.model_uri == "models:/m/2" and svc.canary_candidate() is None
    d.delete(svc)


def test_failed_canary_keeps_stable_serving(zenml_env: Path) -> None:
    d = toy_deployer()
    d.deploy(_cfg("models:/m/1", "canary-b"))
    with pytest.raises(DeploymentError) as ei:
        d.deploy(_cfg("models:/m/fail-2", "canary-b"), canary_percent=30)
    assert "could not be loaded (planted)" in str(ei.value)
    assert "put back on the previous revision" in str(ei.value)
    assert BACKEND["canary-b"].serving == {"models:/m/1": 100}
    svc = d.find_deployment("canary-b")
    assert svc is not None
    assert svc.canary_candidate() is None and svc.config.model_uri == "models:/m/1"
    d.delete(svc)


def test_canary_refused_where_it_cannot_run(
    zenml_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = toy_deployer()
    # A new deployment has nothing to run beside: it serves 100%.
    d.deploy(_cfg("models:/m/1", "canary-c"), canary_percent=25)
    assert BACKEND["canary-c"].serving == {"models:/m/1": 100}
    with pytest.raises(ConfigurationError, match="needs policy 'update'"):
        d.deploy(_cfg("models:/m/2", "canary-c"), policy="replace", canary_percent=25)
    with pytest.raises(ConfigurationError, match="less than or equal to 99"):
        d.deploy(_cfg("models:/m/2", "canary-c"), canary_percent=100)
    monkeypatch.setattr(ToyService, "SUPPORTS_TRAFFIC_SPLIT", False)
    with pytest.raises(ConfigurationError, match="cannot split traffic"):
        d.deploy(_cfg("models:/m/2", "canary-c"), canary_percent=25)
    assert BACKEND["canary-c"].serving == {"models:/m/1": 100}
    d.delete(d.find_deployment("canary-c"))  # type: ignore[arg-type]
