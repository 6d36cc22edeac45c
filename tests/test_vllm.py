"""zmd-vllm end to end with the stand-in: the step in a pipeline, the API key (401 without it,
never leaked, incl. /proc/*/cmdline), predict, the official `openai` client with streaming,
and failures (a model that cannot load, an out-of-memory update). One shared deployment."""

from __future__ import annotations

import json
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from vllm_support import CHAT, SMOL, corrupt_model, standin_config
from zenml import step

from zenml_model_deployers.errors import DeploymentError
from zenml_model_deployers.testing.vllm_standin import standin_command


@step
def choose_model() -> str:
    """An upstream step whose artifact names the model to serve."""
    return SMOL


@pytest.fixture(scope="module")
def keyed(zenml_env: Path) -> Iterator[dict[str, Any]]:
    """A deployment made by `vllm_deployer_step` in a pipeline, its model coming from an
    upstream step's artifact, with an API key from a ZenML secret."""
    from zenml import pipeline
    from zenml.client import Client
    from zenml_model_deployers.steps import vllm_deployer_step

    from zenml_model_deployers.flavors import get_deployer

    key = f"zmd-key-{uuid.uuid4().hex}"
    secret = f"llm{uuid.uuid4().hex[:6]}"
    Client().create_secret(name=secret, values={"api_key": key})
    name = f"llm-keyed-{uuid.uuid4().hex[:4]}"

    @pipeline(enable_cache=False)
    def serve_llm() -> None:
        vllm_deployer_step(
            model=choose_model(),
            served_model_name="smol",
            max_model_len=512,
            api_key="{{" + secret + ".api_key}}",
            executable=standin_command(),
            require_gpu=False,
            deployment_name=name,
            timeout=120,
        )

    run = serve_llm.with_options(run_name=f"serve-{name}")()
    assert run is not None
    run = Client().get_pipeline_run(run.id)
    step_run = run.steps["vllm_deployer_step"]
    svc = step_run.outputs["vllm_deployment"][0].load()
    try:
        yield {"key": key, "svc": svc, "run": run, "step": step_run, "name": name}
    finally:
        get_deployer("zmd-vllm").delete(svc)


def test_step_records_url_and_serves(keyed: dict[str, Any]) -> None:
    """The run completed (the server did not block it), recorded the URL, and the service
    answers prompts (completions) and messages (chat) with real text."""
    svc, step_run = keyed["svc"], keyed["step"]
    assert keyed["run"].status.value == "completed"
    assert step_run.run_metadata["deployed_model_url"] == svc.prediction_url
    assert svc.prediction_url.endswith("/v1/chat/completions")
    assert step_run.run_metadata["deployment"]["served_model_name"] == "smol"
    assert svc.status.server.is_alive()
    assert svc.predict("The capital of France is", max_tokens=3, temperature=0).strip()
    answer = svc.complete(CHAT["messages"], max_tokens=4, temperature=0)
    assert answer["model"] == "smol" and answer["text"].strip()


def test_api_key_enforced(keyed: dict[str, Any]) -> None:
    """Without the key the server answers 401, through the deployment's URL."""
    svc, key = keyed["svc"], keyed["key"]
    body = {"model": "smol", **{k: v for k, v in CHAT.items() if k != "model"}}
    r = requests.post(svc.prediction_url, json=body, timeout=30)
    assert r.status_code == 401
    assert requests.get(svc.base_url + "/v1/models", timeout=10).status_code == 401
    ok = requests.post(
        svc.prediction_url, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=60
    )
    assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"]


def test_openai_client_streams(keyed: dict[str, Any]) -> None:
    """The official `openai` client, base URL `<url>/v1`: streamed chunks make the answer;
    a wrong key is an AuthenticationError."""
    import openai

    svc, key = keyed["svc"], keyed["key"]
    client = openai.OpenAI(base_url=f"{svc.base_url}/v1", api_key=key)
    stream = client.chat.completions.create(
        model="smol",
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=6,
        temperature=0,
        stream=True,
    )
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert len(pieces) >= 2 and "".join(pieces).strip()
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{svc.base_url}/v1", api_key="wrong").models.list()


def test_api_key_never_leaks(keyed: dict[str, Any]) -> None:
    """The key is in no process's argv (/proc/*/cmdline), the service row, the artifact, the
    run metadata, the server's or relay's logs, the artifact store (step logs included)."""
    from zenml.client import Client

    from zenml_model_deployers.materializer import service_to_json

    svc, key = keyed["svc"], keyed["key"]
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes()
        except OSError:
            continue
        assert key.encode() not in argv, f"key in {cmdline}"
    haystacks = {
        "service store": Client().get_service(svc.uuid).model_dump_json(),
        "artifact": json.dumps(service_to_json(svc)),
        "metadata": json.dumps(keyed["step"].run_metadata, default=str),
        "logs": "\n".join(svc.get_logs()),
    }
    for where, text in haystacks.items():
        assert key not in text, f"the key leaked into the {where}"
    store = Path(Client().active_stack.artifact_store.path)
    files = [p for root in (store, svc.workdir) for p in root.rglob("*") if p.is_file()]
    assert any(p.name.startswith("server-") for p in files)  # the scan saw the server log
    assert any(p.name == "supervise.json" for p in files)
    for path in files:
        # The restart spec too: the front keeps the key (VLLM_API_KEY) in memory only.
        assert key.encode() not in path.read_bytes(), f"the key leaked into {path}"


def test_out_of_memory_update_says_replace(keyed: dict[str, Any], tmp_path: Path) -> None:
    """A new revision that does not fit next to the serving one: typed error with the server's
    words and the `policy="replace"` way out; the old revision keeps serving."""
    from zenml_model_deployers.flavors import get_deployer

    svc = keyed["svc"]
    # A server that fails as vLLM does when its weights do not fit (PyTorch's own message).
    script = tmp_path / "vllm-oom"
    script.write_text(
        "#!/bin/sh\necho 'INFO Loading weights'\n"
        "echo 'torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. "
        "GPU 0 has a total capacity of 23.57 GiB of which 1.06 GiB is free.'\nexit 1\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    cfg = svc.config.model_copy(update={"executable": str(script)})
    deployer = get_deployer("zmd-vllm")
    with pytest.raises(DeploymentError) as err:
        deployer.deploy(cfg, timeout=60)
    msg = str(err.value)
    assert "out of memory" in msg and "CUDA out of memory" in msg
    assert "policy='replace'" in msg
    recorded = deployer.find_deployment(keyed["name"])
    assert recorded is not None and recorded.status.config_hash == svc.status.config_hash
    assert recorded.complete("Hi", max_tokens=2)["model"] == "smol"  # the old one serves


def test_model_that_cannot_load(zenml_env: Path) -> None:
    """A first deploy of a model the server cannot load: typed error with its own words."""
    from zenml_model_deployers.flavors import get_deployer

    deployer = get_deployer("zmd-vllm")
    cfg = standin_config("llm-corrupt", model_uri=corrupt_model(zenml_env / "m"))
    with pytest.raises(DeploymentError) as err:
        deployer.deploy(cfg, timeout=60)
    assert "failed to load model" in str(err.value)
    assert deployer.find_deployment("llm-corrupt") is None


def test_cli_lists_describes_and_shows_logs(keyed: dict[str, Any]) -> None:
    """`zmd models list/describe/get-url/logs` work on a vLLM deployment (fast path included)."""
    from click.testing import CliRunner

    from zenml_model_deployers.cli import main as zmd

    r, name, svc = CliRunner(), keyed["name"], keyed["svc"]
    rows = json.loads(
        r.invoke(zmd, ["models", "list", "-o", "json", "--flavor", "zmd-vllm"]).output
    )
    assert [row for row in rows if name in json.dumps(row)]
    desc = json.loads(r.invoke(zmd, ["models", "describe", name, "-o", "json"]).output)
    assert keyed["key"] not in json.dumps(desc)
    assert r.invoke(zmd, ["models", "get-url", name]).output.strip() == svc.prediction_url
    logs = r.invoke(zmd, ["models", "logs", name, "--tail", "200"]).output
    assert "Application startup complete" in logs and keyed["key"] not in logs
    # The real `zmd`, ZenML's path at DEBUG: stdout carries the URL / the JSON alone.
    from cli_output import assert_machine_readable

    assert_machine_readable(
        name, svc.prediction_url, ZMD_FAST_LIST="0", ZENML_LOGGING_VERBOSITY="DEBUG"
    )


def test_killed_server_heals_with_its_key(keyed: dict[str, Any]) -> None:
    """The front restarts a killed server with the API key it keeps in memory only (no file
    holds it): the restarted server still checks it (issue 28)."""
    import time

    import openai
    import psutil

    from zenml_model_deployers.flavors import get_deployer

    deployer, name, key = get_deployer("zmd-vllm"), keyed["name"], keyed["key"]
    svc = deployer.find_deployment(name)
    server = psutil.Process(svc.status.server.pid)
    for p in [server, *server.children(recursive=True)]:
        p.kill()
    client = openai.OpenAI(base_url=f"{svc.base_url}/v1", api_key=key, max_retries=0)
    deadline = time.monotonic() + 90
    while True:
        found = deployer.find_deployment(name).status.server
        if found is not None and found.pid != server.pid:
            try:
                client.models.list()
                break
            except openai.APIError:
                pass
        assert time.monotonic() < deadline, "the server was not restarted"
        time.sleep(0.2)
    assert psutil.Process(found.pid).environ().get("VLLM_API_KEY") == key
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{svc.base_url}/v1", api_key="wrong").models.list()
    assert key.encode() not in (svc.workdir / "supervise.json").read_bytes()
