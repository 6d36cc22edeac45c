"""`huggingface_deployer_step` in real pipelines: updates in place across runs, records the
URL, and the Hugging Face token never shows up anywhere zmd writes or prints."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from hf_support import NAMESPACE, hf_deployer, hf_double, hf_stack, planted_token  # noqa: F401
from zenml import pipeline
from zenml.client import Client
from zenml_model_deployers.steps import huggingface_deployer_step

from zenml_model_deployers.errors import DeploymentError
from zenml_model_deployers.testing.hf_double import HFEndpointsDouble, fake_prediction

REPO = "zmd-test/sentiment"
TASK = "text-classification"


@pipeline(enable_cache=False)
def hf_deploy(name: str, repository: str, revision: str) -> None:
    huggingface_deployer_step(
        repository=repository,
        revision=revision,
        task=TASK,
        deployment_name=name,
        min_replica=0,
        scale_to_zero_timeout=15,
        timeout=20,
    )


def _step(run_name: str) -> Any:
    return Client().get_pipeline_run(run_name).steps["huggingface_deployer_step"]


def test_a_new_revision_updates_the_same_endpoint_in_place(
    hf_deployer: Any,  # noqa: F811
    hf_double: HFEndpointsDouble,  # noqa: F811
) -> None:
    name = f"step-{uuid.uuid4().hex[:6]}"
    path = f"/v2/endpoint/{NAMESPACE}/{name}"
    hf_deploy.with_options(run_name=f"{name}-1")(name=name, repository=REPO, revision="rev-1")
    hf_deploy.with_options(run_name=f"{name}-2")(name=name, repository=REPO, revision="rev-2")
    first, second = _step(f"{name}-1"), _step(f"{name}-2")
    assert first.run_metadata["deployed_model_url"] == second.run_metadata["deployed_model_url"]
    assert [s.run_metadata["deployment"]["revision"] for s in (first, second)] == [1, 2]
    assert second.run_metadata["deployment"]["endpoint"] == f"{NAMESPACE}/{name}"
    assert (
        sum(1 for m, p in hf_double.calls if m == "POST" and p == f"/v2/endpoint/{NAMESPACE}") >= 1
    )
    assert sum(1 for m, p in hf_double.calls if m == "PUT" and p == path) == 1
    assert not [c for c in hf_double.calls if c == ("DELETE", path)], "an update never deletes"
    svc = second.outputs["huggingface_deployment"][0].load()
    assert svc.predict("hi") == fake_prediction(TASK, REPO, "rev-2", "hi")[0]
    # Same revision again: nothing changes on Hugging Face's side.
    puts = len([c for c in hf_double.calls if c[0] == "PUT"])
    hf_deploy.with_options(run_name=f"{name}-3")(name=name, repository=REPO, revision="rev-2")
    assert len([c for c in hf_double.calls if c[0] == "PUT"]) == puts
    hf_deployer.delete(svc)


def test_the_token_never_leaks(
    hf_deployer: Any,  # noqa: F811
    hf_double: HFEndpointsDouble,  # noqa: F811
    zenml_env: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The planted token reaches Hugging Face (the double refuses any other), and never the
    service store, the artifact, the metadata, the logs, a file, the CLI or an error."""
    from zenml_model_deployers.cli import main as zmd
    from zenml_model_deployers.materializer import render_card, service_to_json

    token = planted_token()
    name = f"leak-{uuid.uuid4().hex[:6]}"
    hf_deploy.with_options(run_name=f"{name}-ok")(name=name, repository=REPO, revision="rev-1")
    step = _step(f"{name}-ok")
    svc = step.outputs["huggingface_deployment"][0].load()
    assert svc.predict("x") == fake_prediction(TASK, REPO, "rev-1", "x")[0]
    with pytest.raises(RuntimeError):
        hf_deploy.with_options(run_name=f"{name}-bad")(
            name=name + "-bad", repository="zmd-test/fail-to-load", revision="rev-1"
        )
    with pytest.raises(DeploymentError) as err:
        from zenml_model_deployers.flavors.huggingface.config import HuggingFaceDeploymentConfig

        hf_deployer.deploy(
            HuggingFaceDeploymentConfig(
                deployment_name=name, model_uri="zmd-test/fail-update", revision="rev-2", task=TASK
            )
        )
    from click.testing import CliRunner

    cli = CliRunner()
    bad_step = _step(f"{name}-bad")
    haystacks = {
        "service store": Client().get_service(svc.uuid).model_dump_json(),
        "artifact": json.dumps(service_to_json(svc)),
        "card": render_card(svc),
        "metadata": json.dumps(dict(step.run_metadata), default=str),
        "logs": "\n".join(svc.get_logs()),
        "cli": cli.invoke(zmd, ["models", "describe", name, "-o", "json"]).output
        + cli.invoke(zmd, ["models", "logs", name]).output
        + cli.invoke(zmd, ["models", "list", "-o", "json"]).output,
        "error": str(err.value) + repr(err.value),
        "failed step": json.dumps(bad_step.exception_info, default=str)
        if bad_step.exception_info
        else "",
        "captured output": "".join(capfd.readouterr()) + caplog.text,
    }
    # The haystacks hold what they should (a scan of empty strings proves nothing).
    assert "fail-to-load" in haystacks["failed step"] and "fail-update" in haystacks["error"]
    assert "rev-1" in haystacks["artifact"] and "deployed_model_url" in haystacks["metadata"]
    assert "created Inference Endpoint" in haystacks["logs"]
    # The card's curl example is in Inference Endpoints' format, with a placeholder token.
    assert "Bearer $HF_TOKEN" in haystacks["card"] and "inputs" in haystacks["card"]
    for where, text in haystacks.items():
        assert token not in text, f"the token leaked into the {where}"
    # Every file under the ZenML config dir (artifact store, step logs, zmd's own files),
    # except the SQL database, whose secret store holds the token by design.
    scanned = [
        p
        for p in zenml_env.rglob("*")
        if p.is_file() and not p.name.endswith((".db", ".db-journal", ".db-wal"))
    ]
    assert any(p.name == "service.json" for p in scanned)
    for path in scanned:
        assert token.encode() not in path.read_bytes(), f"the token leaked into {path}"
    hf_deployer.delete(hf_deployer.find_deployment(name))


def test_the_offline_example_runs_end_to_end() -> None:
    """`python examples/huggingface/run.py --offline` as a user runs it (own process; it makes
    its own throw-away ZenML config and double, and cleans up)."""
    from example_support import run_offline_example

    out = run_offline_example("huggingface", timeout=300)
    assert "deployed_model_url: http://127.0.0.1:" in out
    assert "same URL, revision 2" in out
    assert "deleted;" in out
