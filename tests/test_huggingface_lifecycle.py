"""`zmd-huggingface` lifecycle against the double: rollback, pause/resume, scale-to-zero,
timeouts, failures, offline mode, predictions per task, and the token rules."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from click.testing import CliRunner
from hf_support import NAMESPACE, TOKEN_REF, hf_deployer, hf_double, hf_stack  # noqa: F401

from zenml_model_deployers.cli import main as zmd
from zenml_model_deployers.errors import (
    ConfigurationError,
    DeploymentError,
    DeploymentTimeoutError,
    PredictionError,
)
from zenml_model_deployers.flavors.huggingface.config import HuggingFaceDeploymentConfig
from zenml_model_deployers.testing.hf_double import HFEndpointsDouble, fake_prediction

REPO = "zmd-test/sentiment"
TASK = "text-classification"


def _config(name: str, revision: str = "rev-1", **kw: Any) -> HuggingFaceDeploymentConfig:
    args: dict[str, Any] = {
        "deployment_name": name,
        "model_name": name,
        "model_uri": REPO,
        "revision": revision,
        "task": TASK,
    }
    args.update(kw)
    return HuggingFaceDeploymentConfig(**args)


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _calls(double: HFEndpointsDouble, name: str, method: str, suffix: str = "") -> int:
    path = f"/v2/endpoint/{NAMESPACE}/{name}{suffix}"
    return sum(1 for m, p in double.calls if m == method and p == path)


def _cleanup(deployer: Any, name: str) -> None:
    svc = deployer.find_deployment(name)
    if svc is not None:
        deployer.delete(svc)


def test_failed_update_rolls_back_even_when_the_endpoint_went_down(
    hf_deployer: Any,  # noqa: F811
    hf_double: HFEndpointsDouble,  # noqa: F811
) -> None:
    name = _name("rb")
    svc = hf_deployer.deploy(_config(name, "rev-1"))
    url = svc.prediction_url
    # Harsher than `updateFailed`: Hugging Face reports `failed` and nothing serves any more.
    hf_double.update_failure_state = "failed"
    try:
        with pytest.raises(DeploymentError) as err:
            hf_deployer.deploy(_config(name, "rev-2", model_uri="zmd-test/fail-to-load"))
    finally:
        hf_double.update_failure_state = "updateFailed"
    assert "does not appear to have a file named config.json" in (err.value.backend_message or "")
    assert "put back on the previous revision" in str(err.value)
    record = hf_double.endpoint(name)
    assert record is not None and record.state == "running"
    assert record.serving == (REPO, "rev-1")
    assert "failed" in record.history
    back = hf_deployer.find_deployment(name)
    assert back.status.state.value == "active"
    assert back.status.config_hash == svc.status.config_hash
    assert back.prediction_url == url
    assert back.predict("still here") == fake_prediction(TASK, REPO, "rev-1", "still here")[0]
    assert _calls(hf_double, name, "DELETE") == 0
    hf_deployer.delete(back)


def test_stop_pauses_and_start_resumes_on_the_same_url(
    hf_deployer: Any,  # noqa: F811
    hf_double: HFEndpointsDouble,  # noqa: F811
) -> None:
    name = _name("pause")
    svc = hf_deployer.deploy(_config(name))
    url = svc.prediction_url
    hf_deployer.stop(svc)
    record = hf_double.endpoint(name)
    assert record is not None and record.state == "paused", "stop must pause, never delete"
    stopped = hf_deployer.find_deployment(name)
    assert stopped.status.state.value == "inactive"
    assert f"zmd models start {name}" in stopped.status.last_error
    with pytest.raises(PredictionError):
        stopped.predict("x", timeout=5)
    hf_deployer.start(stopped)
    again = hf_deployer.find_deployment(name)
    assert again.status.state.value == "active" and again.prediction_url == url
    assert again.predict("x") == fake_prediction(TASK, REPO, "rev-1", "x")[0]
    assert _calls(hf_double, name, "POST", "/pause") == 1
    assert _calls(hf_double, name, "POST", "/resume") == 1
    assert _calls(hf_double, name, "DELETE") == 0
    hf_deployer.delete(again)
    assert hf_double.endpoint(name) is None


def test_scale_to_zero_is_its_own_state_and_the_next_request_wakes_it(
    hf_deployer: Any,  # noqa: F811
    hf_double: HFEndpointsDouble,  # noqa: F811
) -> None:
    from zenml_model_deployers.cli import main as zmd

    name = _name("s2z")
    cfg = _config(name, min_replica=0, scale_to_zero_timeout=15)
    svc = hf_deployer.deploy(cfg)
    hf_double.scale_to_zero(name)
    asleep = hf_deployer.find_deployment(name)
    assert asleep.status.state.value == "scaled_to_zero"
    assert "wakes it up" in asleep.status.last_error
    rows = json.loads(CliRunner().invoke(zmd, ["models", "list", "-o", "json"]).output)
    assert [r["state"] for r in rows if r["name"] == name] == ["scaled-to-zero"]
    # Deploying the same configuration again neither fails nor wakes it up.
    kept = hf_deployer.deploy(cfg)
    assert kept.uuid == svc.uuid
    assert hf_double.endpoint(name).state == "scaledToZero"  # type: ignore[union-attr]
    # A prediction wakes it up and waits for the cold start (within its timeout).
    assert kept.predict("wake up", timeout=10) == fake_prediction(TASK, REPO, "rev-1", "wake up")[0]
    assert hf_deployer.find_deployment(name).status.state.value == "active"
    hf_deployer.delete(kept)


def test_create_timeout_is_typed_and_leaves_no_endpoint(
    hf_deployer: Any,  # noqa: F811
    hf_double: HFEndpointsDouble,  # noqa: F811
) -> None:
    name = _name("slow")
    t0 = time.monotonic()
    with pytest.raises(DeploymentTimeoutError) as err:
        hf_deployer.deploy(_config(name, model_uri="zmd-test/never-ready-model"), timeout=1)
    assert time.monotonic() - t0 < 10, "the deploy's timeout bounds the wait"
    assert "initializing" in (err.value.backend_message or "")
    assert "deleted" in str(err.value)
    assert hf_double.endpoint(name) is None
    assert _calls(hf_double, name, "DELETE") == 1
    assert hf_deployer.find_deployment(name) is None


def test_failed_create_raises_hugging_faces_message_and_leaves_nothing(
    hf_deployer: Any,  # noqa: F811
    hf_double: HFEndpointsDouble,  # noqa: F811
) -> None:
    name = _name("bad")
    with pytest.raises(DeploymentError) as err:
        hf_deployer.deploy(_config(name, model_uri="zmd-test/fail-weights"))
    assert "zmd-test/fail-weights does not appear to have a file named config.json" in (
        err.value.backend_message or ""
    )
    assert "failed" in str(err.value)
    assert hf_double.endpoint(name) is None
    assert hf_deployer.find_deployment(name) is None


def test_settings_that_cannot_change_in_place_are_refused_and_the_old_revision_serves(
    hf_deployer: Any,  # noqa: F811
    hf_double: HFEndpointsDouble,  # noqa: F811
) -> None:
    name = _name("region")
    svc = hf_deployer.deploy(_config(name))
    with pytest.raises(ConfigurationError) as err:
        hf_deployer.deploy(_config(name, "rev-2", region="eu-west-1"))
    assert "policy='replace'" in str(err.value)
    kept = hf_deployer.find_deployment(name)
    assert kept.status.config_hash == svc.status.config_hash
    assert kept.predict("x") == fake_prediction(TASK, REPO, "rev-1", "x")[0]
    # Updatable settings reach the endpoint in place.
    new = hf_deployer.deploy(_config(name, "rev-2", instance_size="x4", max_replica=3))
    payload = hf_double.endpoint(name).payload  # type: ignore[union-attr]
    assert payload["compute"]["instanceSize"] == "x4"
    assert payload["compute"]["scaling"]["maxReplica"] == 3
    assert new.prediction_url == svc.prediction_url
    # What the error advises works: policy "replace" deletes, then creates in the new region.
    moved = hf_deployer.deploy(_config(name, "rev-2", region="eu-west-1"), policy="replace")
    assert hf_double.endpoint(name).payload["provider"]["region"] == "eu-west-1"  # type: ignore[union-attr]
    assert moved.predict("x") == fake_prediction(TASK, REPO, "rev-2", "x")[0]
    assert hf_deployer.find_deployment(name).uuid == moved.uuid
    hf_deployer.delete(moved)


def test_an_endpoint_deleted_outside_zmd_shows_as_error_and_start_recreates_it(
    hf_deployer: Any,  # noqa: F811
    hf_double: HFEndpointsDouble,  # noqa: F811
) -> None:
    from hf_support import planted_token
    from huggingface_hub import HfApi

    name = _name("gone")
    hf_deployer.deploy(_config(name))
    HfApi().delete_inference_endpoint(name, namespace=NAMESPACE, token=planted_token())
    gone = hf_deployer.find_deployment(name)
    assert gone.status.state.value == "error"
    assert "no longer exists" in gone.status.last_error
    hf_deployer.start(gone)
    back = hf_deployer.find_deployment(name)
    assert back.status.state.value == "active"
    assert back.predict("x") == fake_prediction(TASK, REPO, "rev-1", "x")[0]
    hf_deployer.delete(back)


def test_predict_follows_the_endpoints_task(
    hf_deployer: Any,  # noqa: F811
    hf_double: HFEndpointsDouble,  # noqa: F811
) -> None:
    name = _name("tasks")
    try:
        gen = hf_deployer.deploy(_config(name, task="text-generation"))
        expected = fake_prediction("text-generation", REPO, "rev-1", "Once")[0]["generated_text"]
        assert gen.predict("Once") == expected
        emb = hf_deployer.deploy(_config(name, task="feature-extraction"))
        # The client returns float32 arrays; predict() turns them into plain lists.
        vector = fake_prediction("feature-extraction", REPO, "rev-1", "x")[0]
        assert emb.predict("x")[0] == pytest.approx(vector, rel=1e-6)
        # A batch: one answer per input.
        batch = emb.predict(["x", "y"])
        assert len(batch) == 2 and batch[0][0] == pytest.approx(vector, rel=1e-6)
        # A task the client has no call for: a plain JSON POST of {"inputs": ...}.
        other = hf_deployer.deploy(_config(name, task="my-custom-task"))
        assert other.predict("x") == fake_prediction("my-custom-task", REPO, "rev-1", "x")
        # A bad request comes back as a PredictionError with the endpoint's message.
        with pytest.raises(PredictionError) as err:
            other.predict({"inputs": "x", "stream": True})
        assert "streaming is not supported" in (err.value.backend_message or "")
    finally:
        _cleanup(hf_deployer, name)


def test_namespace_defaults_to_the_tokens_user(hf_double: HFEndpointsDouble) -> None:  # noqa: F811
    from hf_support import planted_token
    from zenml.client import Client
    from zenml.enums import StackComponentType
    from zenml.stack.stack_component import StackComponent

    planted_token()
    comp = Client().create_stack_component(
        name=_name("hf-no-namespace"),
        flavor="zmd-huggingface",
        component_type=StackComponentType.MODEL_DEPLOYER,
        configuration={"token": TOKEN_REF},
    )
    deployer: Any = StackComponent.from_model(comp)
    name = _name("whoami")
    svc = deployer.deploy(_config(name))
    assert svc.status.namespace == hf_double.namespace
    assert hf_double.endpoint(name) is not None
    deployer.delete(svc)


def test_a_plain_token_is_refused_without_being_echoed(hf_stack: str) -> None:  # noqa: F811
    from zenml.client import Client
    from zenml.enums import StackComponentType

    plain = "hf_plainTextTokenThatMustNotBeEchoed"
    with pytest.raises(Exception) as err:
        Client().create_stack_component(
            name=_name("hf-plain"),
            flavor="zmd-huggingface",
            component_type=StackComponentType.MODEL_DEPLOYER,
            configuration={"token": plain},
        )
    assert "secret reference" in str(err.value) and "zenml secret create" in str(err.value)
    assert plain not in str(err.value)
    with pytest.raises(ValueError) as err2:
        _config("plain", token=plain)
    assert "secret reference" in str(err2.value) and plain not in str(err2.value)


def test_offline_mode_refuses_hugging_face_before_any_call_but_reaches_the_double(
    hf_deployer: Any,  # noqa: F811
    hf_double: HFEndpointsDouble,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    # The double on 127.0.0.1 is not Hugging Face: offline test suites can deploy to it.
    served = _name("offline-ok")
    svc = hf_deployer.deploy(_config(served))
    assert svc.predict("x") == fake_prediction(TASK, REPO, "rev-1", "x")[0]
    name = _name("offline")
    with monkeypatch.context() as m:
        # Now the API is Hugging Face's: nothing may be sent, and nothing is created or changed.
        m.setattr(
            constants, "INFERENCE_ENDPOINTS_ENDPOINT", "https://api.endpoints.huggingface.cloud/v2"
        )
        calls = len(hf_double.calls)
        with pytest.raises(ConfigurationError) as err:
            hf_deployer.deploy(_config(name))
        assert "HF_HUB_OFFLINE" in str(err.value)
        with pytest.raises(ConfigurationError):
            hf_deployer.stop(svc)
        with pytest.raises(ConfigurationError):
            svc.predict("x")
        kept = hf_deployer.find_deployment(served)
        assert kept.status.state.value == "active"
        assert "not refreshed" in kept.status.last_error
        assert len(hf_double.calls) == calls
        assert hf_deployer.find_deployment(name) is None
    assert hf_double.endpoint(served).state == "running"  # type: ignore[union-attr]
    hf_deployer.delete(svc)


def test_offline_describe_shows_the_recorded_message_and_that_it_is_not_refreshed(
    hf_deployer: Any,  # noqa: F811
    hf_double: HFEndpointsDouble,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from huggingface_hub import constants

    name = _name("offline-msg")
    svc = hf_deployer.deploy(_config(name, "rev-1"))
    with pytest.raises(DeploymentError):
        hf_deployer.deploy(_config(name, "rev-2", model_uri="zmd-test/fail-to-load"))
    # The row now records why the last update failed (the previous revision serves).
    assert svc.uuid == hf_deployer.find_deployment(name).uuid
    try:
        with monkeypatch.context() as m:
            m.setattr(constants, "HF_HUB_OFFLINE", True)
            m.setattr(
                constants,
                "INFERENCE_ENDPOINTS_ENDPOINT",
                "https://api.endpoints.huggingface.cloud/v2",
            )
            res = CliRunner().invoke(zmd, ["models", "describe", name, "-o", "json"])
            assert res.exit_code == 0, res.output
            message = json.loads(res.output)["status_message"]
            assert message.startswith("update to ") and "zmd-test/fail-to-load" in message
            assert message.endswith("(not refreshed: HF_HUB_OFFLINE is set)")
            # Reading it again does not stack the note.
            again = json.loads(
                CliRunner().invoke(zmd, ["models", "describe", name, "-o", "json"]).output
            )["status_message"]
            assert again.count("not refreshed") == 1
    finally:
        _cleanup(hf_deployer, name)


def test_progressive_rollout_refused_before_anything_changes(
    hf_deployer: Any,  # noqa: F811
    hf_double: HFEndpointsDouble,  # noqa: F811
) -> None:
    name = _name("hf-canary")
    try:
        hf_deployer.deploy(_config(name))
        calls = len(hf_double.calls)
        for kwargs in ({"policy": "canary"}, {"policy": "canary", "rollout": {"interval": 1}}):
            with pytest.raises(ConfigurationError, match="cannot split traffic") as ei:
                hf_deployer.deploy(_config(name, revision="rev-2"), **kwargs)
            assert "policy 'update'" in str(ei.value)
        # Not one request reached the endpoints API: nothing was looked up or changed.
        assert len(hf_double.calls) == calls
        assert hf_deployer.find_deployment(name).config.revision == "rev-1"
        # `--stats` says Hugging Face reports no request metrics (instead of numbers).
        res = CliRunner().invoke(zmd, ["models", "describe", name, "--stats", "-o", "json"])
        assert res.exit_code == 0, res.output
        assert json.loads(res.output)["stats"] == "zmd-huggingface reports no request metrics"
    finally:
        _cleanup(hf_deployer, name)


def test_stdout_carries_only_the_result(hf_deployer: Any) -> None:  # noqa: F811
    """`get-url` prints the URL alone, `-o json` parses, even with ZenML logging at DEBUG (the
    real `zmd`; HF_HUB_OFFLINE, as the double serves only this process: the recorded state is
    shown, not refreshed)."""
    from cli_output import assert_machine_readable

    name = _name("stdout")
    svc = hf_deployer.deploy(_config(name))
    try:
        info = assert_machine_readable(
            name, svc.prediction_url, HF_HUB_OFFLINE="1", ZENML_LOGGING_VERBOSITY="DEBUG"
        )
        assert info["flavor"] == "zmd-huggingface"
    finally:
        _cleanup(hf_deployer, name)
