"""The in-place base (remote.py): update, failed update rolled back on the backend, timeout,
interruption -- through the real lifecycle (deployer.py) and ZenML's service store."""

from __future__ import annotations

import time
from pathlib import Path
from uuid import uuid4

import pytest
from inplace_toy import BACKEND, LOCK, ToyConfig, ToyService, toy_deployer

from zenml_model_deployers.errors import DeploymentError, DeploymentTimeoutError
from zenml_model_deployers.remote import BackendState
from zenml_model_deployers.service import DeploymentStatus


def _cfg(name: str, model: str) -> ToyConfig:
    return ToyConfig(deployment_name=name, model_name=name, model_uri=model)


def test_update_in_place_then_failed_update_restores_previous(zenml_env: Path) -> None:
    d = toy_deployer()
    svc = d.deploy(_cfg("inplace-a", "models:/m/1"))
    assert BACKEND["inplace-a"].serving == {"models:/m/1": 100}
    svc = d.deploy(_cfg("inplace-a", "models:/m/2"))
    assert BACKEND["inplace-a"].serving == {"models:/m/2": 100}
    assert svc.status.revision == 2
    good_hash = svc.status.config_hash

    with pytest.raises(DeploymentError) as ei:
        d.deploy(_cfg("inplace-a", "models:/m/fail-3"))
    msg = str(ei.value)
    # The backend's own words, and what happened after: put back, serving again.
    assert "could not be loaded (planted)" in msg
    assert "put back on the previous revision" in msg and "models:/m/2" in msg
    assert BACKEND["inplace-a"].serving == {"models:/m/2": 100}
    assert BACKEND["inplace-a"].applies[-1] == {"models:/m/2": 100}
    again = d.find_deployment("inplace-a")
    assert again is not None
    assert again.status.config_hash == good_hash
    assert again.config.model_uri == "models:/m/2"
    d.delete(again)
    assert "inplace-a" not in BACKEND


def test_failed_create_leaves_nothing(zenml_env: Path) -> None:
    d = toy_deployer()
    with pytest.raises(DeploymentError, match="planted"):
        d.deploy(_cfg("inplace-b", "models:/m/fail-1"))
    assert "inplace-b" not in BACKEND
    assert d.find_deployment("inplace-b") is None


def test_rollback_failure_is_reported_with_the_first_cause(zenml_env: Path) -> None:
    d = toy_deployer()
    d.deploy(_cfg("inplace-c", "models:/m/1"))
    # The recorded revision itself cannot come back (e.g. its model was deleted meanwhile).
    svc = d.find_deployment("inplace-c")
    assert svc is not None
    svc.status.live_config = {**svc.status.live_config, "model_uri": "models:/m/fail-gone"}  # type: ignore[dict-item]
    d.persist(svc)
    with pytest.raises(DeploymentError) as ei:
        d.deploy(_cfg("inplace-c", "models:/m/fail-2"))
    msg = str(ei.value)
    assert msg.index("fail-2") < msg.index("failed too")
    assert "back on models:/m/fail-gone" in msg
    d.delete(d.find_deployment("inplace-c"))  # type: ignore[arg-type]


def test_timeout_rolls_back(zenml_env: Path) -> None:
    d = toy_deployer()
    d.deploy(_cfg("inplace-d", "models:/m/1"))
    with pytest.raises(DeploymentTimeoutError) as ei:
        d.deploy(_cfg("inplace-d", "models:/m/slow-2"), timeout=0.6)
    assert "put back on the previous revision" in str(ei.value)
    assert BACKEND["inplace-d"].serving == {"models:/m/1": 100}
    assert BACKEND["inplace-d"].applies[-1] == {"models:/m/1": 100}
    d.delete(d.find_deployment("inplace-d"))  # type: ignore[arg-type]


def test_interruption_puts_previous_back_without_waiting(zenml_env: Path) -> None:
    d = toy_deployer()
    d.deploy(_cfg("inplace-e", "models:/m/1"))
    svc = d.find_deployment("inplace-e")
    assert svc is not None
    svc.config = _cfg("inplace-e", "models:/m/2")
    original = svc.read_backend
    calls = {"n": 0}

    def interrupted() -> object:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original()

    object.__setattr__(svc, "read_backend", interrupted)
    with pytest.raises(KeyboardInterrupt):
        svc.provision_revision(timeout=5)
    # Applied new, then previous again; no wait for it (one read after the interrupt: none).
    assert BACKEND["inplace-e"].applies[-2:] == [{"models:/m/2": 100}, {"models:/m/1": 100}]
    assert calls["n"] == 2
    d.delete(d.find_deployment("inplace-e"))  # type: ignore[arg-type]


class _Hooked(ToyService):
    """The toy with the optional hooks a flavor refines (Hugging Face uses all of them)."""

    def record_event(self, message: str) -> None:
        HOOKS.append(("event", message))

    def on_create_failed(self, cause: BaseException) -> None:
        HOOKS.append(("create failed", type(cause).__name__))
        with LOCK:
            BACKEND.pop(self.deployment_name, None)

    def updates_in_place(self) -> bool:
        return self.deployment_name in BACKEND

    def wait_hint(self, state: BackendState, *, timed_out: bool) -> str:
        return "slow toy" if timed_out else f"toy says {state.state}"


HOOKS: list[tuple[str, str]] = []


def _hooked(name: str, model: str) -> _Hooked:
    return _Hooked(uuid=uuid4(), config=_cfg(name, model), status=DeploymentStatus())


def test_the_optional_hooks_are_called_where_a_flavor_needs_them() -> None:
    HOOKS.clear()
    svc = _hooked("hooks-a", "models:/m/1")
    svc.provision_revision(timeout=5)
    # A failed update: the rollback is noted, its hint is the flavor's, nothing is deleted.
    svc.config = _cfg("hooks-a", "models:/m/fail-2")
    with pytest.raises(DeploymentError) as ei:
        svc.provision_revision(timeout=5)
    assert ei.value.hint == "toy says UPDATE_FAILED"
    events = [m for kind, m in HOOKS if kind == "event"]
    assert events[0].startswith("models:/m/fail-2") and "rolling back to models:/m/1" in events[0]
    assert events[-1].startswith("rolled back: models:/m/1")
    assert not [h for h in HOOKS if h[0] == "create failed"]
    assert BACKEND["hooks-a"].serving == {"models:/m/1": 100}
    # The object is gone (deleted outside): the next revision creates it, with no rollback
    # to attempt, and a failed create is the flavor's to clean up, interrupted or not.
    with LOCK:
        BACKEND.pop("hooks-a")
    HOOKS.clear()
    svc.config = _cfg("hooks-a", "models:/m/fail-3")
    with pytest.raises(DeploymentError):
        svc.provision_revision(timeout=5)
    assert HOOKS == [("create failed", "DeploymentError")]
    assert "hooks-a" not in BACKEND
    HOOKS.clear()
    svc.config = _cfg("hooks-a", "models:/m/slow-4")
    with pytest.raises(DeploymentTimeoutError) as timed_out:
        svc.provision_revision(timeout=0.3)
    assert timed_out.value.hint == "slow toy"
    assert HOOKS == [("create failed", "DeploymentTimeoutError")]


def test_poll_backend_is_bounded() -> None:
    svc = _hooked("hooks-b", "models:/m/1")
    svc.provision_revision(timeout=5)
    assert svc.poll_backend(lambda s: s.state == "READY", timeout=1) is not None
    t0 = time.monotonic()
    assert svc.poll_backend(lambda s: s.gone, timeout=0.3) is None
    assert time.monotonic() - t0 < 2
    with LOCK:
        BACKEND.pop("hooks-b")
    assert svc.poll_backend(lambda s: s.gone, timeout=1) is not None
