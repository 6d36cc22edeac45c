"""zmd-vllm end to end against the real vLLM (`vllm serve`, CPU build) serving SmolLM2-135M:
the step in a pipeline, `deployed_model_url`, the `openai` client (completion, chat,
streaming), the API key (environment only, never leaked), vLLM's own 4xx through the front,
kill -9 self-heal with no orphan, an update under a looping client with 0 failed requests, a
failed update, stop and delete with no process left.

One deployment for the module, three vLLM starts in all (deploy, heal, update) and one that
fails: each takes 1.5-3 minutes on 2 busy cores. The tests run in file order and build on each
other.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
from vllm_support import (
    SMOL_DIR,
    VLLM_TIMEOUT,
    broken_hf_model,
    make_lora_adapter,
    require_real_vllm,
    server_tree,
    update_under_loop,
    vllm_settings,
    wait_gone,
)
from zenml import step

from zenml_model_deployers.errors import DeploymentError, PredictionError

PROMPT = "The capital of France is"
SHORT_CHAT = {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 2}


def _progress(msg: str) -> None:
    # Starts take minutes: say where the module is (shown with -s, and in CI's live log).
    print(f"[test_vllm {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@step
def choose_model() -> str:
    """An upstream step whose artifact names the model to serve."""
    return str(SMOL_DIR)


@pytest.fixture(scope="module")
def served(zenml_env: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A deployment made by `vllm_deployer_step` in a pipeline, its model coming from an
    upstream step's artifact, with an API key from a ZenML secret, and a LoRA adapter whose
    weights are zero (it answers as the base model)."""
    require_real_vllm()
    from zenml import pipeline
    from zenml.client import Client
    from zenml_model_deployers.steps import vllm_deployer_step

    from zenml_model_deployers.flavors import get_deployer

    key = f"zmd-key-{uuid.uuid4().hex}"
    secret = f"llm{uuid.uuid4().hex[:6]}"
    Client().create_secret(name=secret, values={"api_key": key})
    name = f"llm-real-{uuid.uuid4().hex[:4]}"
    adapters = tmp_path_factory.mktemp("lora")
    settings = vllm_settings(
        api_key="{{" + secret + ".api_key}}",
        lora_adapters={"smol-a": make_lora_adapter(adapters / "zero", seed=1, scale=0.0)},
        max_lora_rank=8,
    )

    @pipeline(enable_cache=False)
    def serve_llm() -> None:
        vllm_deployer_step(
            model=choose_model(), deployment_name=name, timeout=VLLM_TIMEOUT, **settings
        )

    t0 = time.monotonic()
    _progress("deploying the real vLLM from a pipeline")
    run = serve_llm.with_options(run_name=f"serve-{name}")()
    _progress(f"deployed in {time.monotonic() - t0:.0f} s")
    assert run is not None
    run = Client().get_pipeline_run(run.id)
    step_run = run.steps["vllm_deployer_step"]
    svc = step_run.outputs["vllm_deployment"][0].load()
    state = {
        "key": key,
        "svc": svc,
        "run": run,
        "step": step_run,
        "name": name,
        "adapters": adapters,
    }
    try:
        yield state
    finally:
        deployer = get_deployer("zmd-vllm")
        found = deployer.find_deployment(name)
        if found is not None:
            deployer.delete(found)


def _client(svc: Any, key: str) -> Any:
    import openai

    return openai.OpenAI(base_url=f"{svc.base_url}/v1", api_key=key, max_retries=0, timeout=120)


def test_step_records_url_and_serves(served: dict[str, Any]) -> None:
    """The run completed (the server did not block it) and recorded the URL; the service
    completes prompts and chats with the model's real answer, as the name it was served as."""
    svc, step_run = served["svc"], served["step"]
    assert served["run"].status.value == "completed"
    assert step_run.run_metadata["deployed_model_url"] == svc.prediction_url
    assert svc.prediction_url.endswith("/v1/chat/completions")
    assert step_run.run_metadata["deployment"]["served_model_name"] == "smollm2"
    assert "Paris" in svc.predict(PROMPT, max_tokens=4, temperature=0)
    answer = svc.complete([{"role": "user", "content": "Say hello."}], max_tokens=4)
    assert answer["model"] == "smollm2" and answer["text"].strip()


def test_openai_client_completion_chat_stream(served: dict[str, Any]) -> None:
    """The official `openai` client, base URL `<url>/v1`: a completion, a chat, a stream whose
    chunks make the answer; a wrong key is an AuthenticationError."""
    import openai

    svc, key = served["svc"], served["key"]
    client = _client(svc, key)
    assert [m.id for m in client.models.list()] == ["smollm2", "smol-a"]
    done = client.completions.create(model="smollm2", prompt=PROMPT, max_tokens=4, temperature=0)
    assert "Paris" in done.choices[0].text
    chat = client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Say hello."}], max_tokens=4
    )
    assert chat.choices[0].message.content
    stream = client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=6,
        temperature=0,
        stream=True,
    )
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert len(pieces) >= 2 and "".join(pieces).strip()
    with pytest.raises(openai.AuthenticationError):
        _client(svc, "wrong").models.list()


def test_api_key_by_environment_only(served: dict[str, Any]) -> None:
    """401 without the key through the URL; the server got it as VLLM_API_KEY, and it is in no
    process's argv, nor in the service row, artifact, metadata, logs or any file."""
    from zenml.client import Client

    from zenml_model_deployers.materializer import service_to_json

    svc, key = served["svc"], served["key"]
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    assert requests.post(svc.prediction_url, json=body, timeout=30).status_code == 401
    assert requests.get(svc.base_url + "/v1/models", timeout=10).status_code == 401
    server = psutil.Process(svc.status.server.pid)
    assert server.environ().get("VLLM_API_KEY") == key
    # The CPU defaults: eager mode (no minutes of torch.compile), a bounded KV cache.
    assert "--enforce-eager" in server.cmdline()
    assert server.environ().get("VLLM_CPU_KVCACHE_SPACE") == "1"
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes()
        except OSError:
            continue
        assert key.encode() not in argv, f"key in {cmdline}"
    haystacks = {
        "service store": Client().get_service(svc.uuid).model_dump_json(),
        "artifact": json.dumps(service_to_json(svc)),
        "metadata": json.dumps(served["step"].run_metadata, default=str),
        "logs": "\n".join(svc.get_logs()),
    }
    for where, text in haystacks.items():
        assert key not in text, f"the key leaked into the {where}"
    store = Path(Client().active_stack.artifact_store.path)
    files = [p for root in (store, svc.workdir) for p in root.rglob("*") if p.is_file()]
    assert any(p.name == "supervise.json" for p in files)
    for path in files:
        assert key.encode() not in path.read_bytes(), f"the key leaked into {path}"


def test_bad_inputs_pass_vllms_own_4xx_through(served: dict[str, Any]) -> None:
    """An empty prompt, an unknown model, malformed JSON: the URL answers exactly what vLLM
    answers on its private port (status and body); predict() raises it typed."""
    svc, key = served["svc"], served["key"]
    direct = f"http://127.0.0.1:{svc.status.server_port}"
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    cases = {
        "empty prompt": ("/v1/completions", b'{"prompt": "", "max_tokens": 2}', 400),
        "unknown model": ("/v1/completions", b'{"model": "nope", "prompt": "hi"}', 404),
        "malformed JSON": ("/v1/completions", b'{"prompt": "hi",', 400),
        "chat without messages": ("/v1/chat/completions", b'{"model": "smollm2"}', 400),
    }
    for what, (path, body, status) in cases.items():
        via_url = requests.post(svc.base_url + path, data=body, headers=headers, timeout=60)
        at_server = requests.post(direct + path, data=body, headers=headers, timeout=60)
        assert via_url.status_code == at_server.status_code == status, what
        assert via_url.json() == at_server.json(), what
    with pytest.raises(PredictionError) as err:
        svc.complete({"prompt": ""}, max_tokens=2)
    assert err.value.status_code == 400
    assert "Either prompt or prompt_embeds must be provided and non-empty" in str(err.value)


def test_cli_describes_and_shows_logs(served: dict[str, Any]) -> None:
    """`zmd models describe/get-url/logs` on a vLLM deployment: vLLM's own log, no key."""
    from click.testing import CliRunner

    from zenml_model_deployers.cli import main as zmd

    r, name, svc = CliRunner(), served["name"], served["svc"]
    desc = json.loads(r.invoke(zmd, ["models", "describe", name, "-o", "json"]).output)
    assert desc["served_model_name"] == "smollm2" and served["key"] not in json.dumps(desc)
    assert r.invoke(zmd, ["models", "get-url", name]).output.strip() == svc.prediction_url
    logs = r.invoke(zmd, ["models", "logs", name, "--tail", "400"]).output
    assert "Application startup complete" in logs and served["key"] not in logs


def test_same_config_again_restarts_nothing(served: dict[str, Any]) -> None:
    """Deploying the recorded config again returns the running deployment untouched (no vLLM
    start: seconds, not minutes); ZenML's own model deployer API finds it with its URL."""
    from zenml_model_deployers.flavors import get_deployer

    deployer, svc = get_deployer("zmd-vllm"), served["svc"]
    pid = svc.status.server.pid
    t0 = time.monotonic()
    again = deployer.deploy(svc.config, timeout=VLLM_TIMEOUT)
    assert time.monotonic() - t0 < 15
    assert again.uuid == svc.uuid and again.status.server.pid == pid
    found = deployer.find_model_server(service_uuid=svc.uuid)
    assert [s.get_prediction_url() for s in found] == [svc.prediction_url]


def test_out_of_memory_update_says_replace(served: dict[str, Any], tmp_path: Path) -> None:
    """A new revision that does not fit next to the serving one: typed error with the server's
    words and the `policy="replace"` way out; the old revision keeps serving."""
    import stat

    from zenml_model_deployers.flavors import get_deployer

    svc = served["svc"]
    # A server that fails as vLLM does when its weights do not fit (PyTorch's own message).
    script = tmp_path / "vllm-oom"
    script.write_text(
        "#!/bin/sh\necho 'INFO Loading weights'\n"
        "echo 'torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. "
        "GPU 0 has a total capacity of 23.57 GiB of which 1.06 GiB is free.'\nexit 1\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    deployer = get_deployer("zmd-vllm")
    with pytest.raises(DeploymentError) as err:
        deployer.deploy(svc.config.model_copy(update={"executable": str(script)}), timeout=60)
    msg = str(err.value)
    assert "out of memory" in msg and "CUDA out of memory" in msg
    assert "policy='replace'" in msg
    recorded = deployer.find_deployment(served["name"])
    assert recorded is not None and recorded.status.config_hash == svc.status.config_hash
    assert recorded.complete("Hi", max_tokens=2)["model"] == "smollm2"


def test_lora_adapters_update_without_restart(served: dict[str, Any]) -> None:
    """An update that changes only LoRA adapters (one replaced under its name, one added,
    then one removed) is done in the serving server: same process, 0 failed requests of a
    client looping on the replaced adapter, its new answers at once. The URL refuses vLLM's
    adapter routes; a bad adapter fails the update typed and changes nothing."""
    from zenml_model_deployers.flavors import get_deployer

    deployer, name, key = get_deployer("zmd-vllm"), served["name"], served["key"]
    svc = deployer.find_deployment(name)
    pid, folder = svc.status.server.pid, served["adapters"]
    client = _client(svc, key)

    def answer(model: str) -> str:
        done = client.completions.create(model=model, prompt=PROMPT, max_tokens=3, temperature=0)
        return done.choices[0].text

    assert answer("smol-a") == answer("smollm2")  # zero weights: the base model's answer
    changed = {
        "smol-a": make_lora_adapter(folder / "a2", seed=2, scale=0.5),
        "smol-b": make_lora_adapter(folder / "b", seed=3, scale=0.5),
    }
    cfg = svc.config.model_copy(update={"lora_adapters": changed})
    request = {"model": "smol-a", **SHORT_CHAT}
    new, loop, seconds = update_under_loop(deployer, svc, cfg, request, VLLM_TIMEOUT)
    _progress(f"adapters updated in place in {seconds:.1f} s, {loop.ok} requests meanwhile")
    assert loop.failures == [], f"{len(loop.failures)} failed requests: {loop.failures[:3]}"
    assert new.status.server.pid == pid and new.status.revision == svc.status.revision + 1
    assert seconds < 60, "an adapter-only update took as long as a restart"
    assert answer("smol-a") != answer("smollm2") and answer("smol-b").strip()
    assert [m.id for m in client.models.list()] == ["smollm2", "smol-a", "smol-b"]
    # The relay counts requests under the new revision; a restart would load the new adapters.
    assert new.status.config_hash == cfg.config_hash() != svc.status.config_hash
    spec = json.loads((svc.workdir / "supervise.json").read_text())
    assert (
        spec["config_hash"] == cfg.config_hash() and "smol-b=" + changed["smol-b"] in spec["argv"]
    )

    # Through the URL, vLLM's adapter routes are refused, key or not, however spelled.
    headers = {"Authorization": f"Bearer {key}"}
    for path in ("/v1/load_lora_adapter", "/v1/load%5Flora_adapter", "/adapters", "/adapters/x"):
        body = {"lora_name": "x", "lora_path": str(folder / "b")}
        r = requests.post(svc.base_url + path, json=body, headers=headers, timeout=30)
        assert r.status_code == 403, path

    # A bad adapter (its rank above max_lora_rank) after a good new one: vLLM's words, and
    # the good one, loaded first, is unloaded again: nothing changed.
    bad = make_lora_adapter(folder / "bad", seed=4, scale=0.5)
    config_json = Path(bad) / "adapter_config.json"
    config_json.write_text(config_json.read_text().replace('"r": 8', '"r": 64'))
    good = make_lora_adapter(folder / "d", seed=5, scale=0.5)
    with pytest.raises(DeploymentError) as err:
        deployer.deploy(
            cfg.model_copy(update={"lora_adapters": {**changed, "smol-d": good, "smol-c": bad}}),
            timeout=VLLM_TIMEOUT,
        )
    assert "smol-c" in str(err.value) and err.value.backend_message
    recorded = deployer.find_deployment(name)
    assert recorded.status.config_hash == cfg.config_hash() and recorded.status.server.pid == pid
    assert [m.id for m in client.models.list()] == ["smollm2", "smol-a", "smol-b"]

    # Removing an adapter unloads it.
    only_a = cfg.model_copy(update={"lora_adapters": {"smol-a": changed["smol-a"]}})
    served["svc"] = deployer.deploy(only_a, timeout=VLLM_TIMEOUT)
    assert served["svc"].status.server.pid == pid
    assert [m.id for m in client.models.list()] == ["smollm2", "smol-a"]


def test_killed_server_heals_without_orphans(served: dict[str, Any]) -> None:
    """kill -9 of vLLM's API server alone orphans its EngineCore and worker (3 GB): the front
    ends them and starts the server again, with the key it keeps in memory only."""
    import openai

    from zenml_model_deployers.flavors import get_deployer

    deployer, name, key = get_deployer("zmd-vllm"), served["name"], served["key"]
    svc = deployer.find_deployment(name)
    tree = server_tree(svc.status.server.pid)
    assert any("EngineCore" in " ".join(p.cmdline()) for p in tree[1:]), tree
    t0 = time.monotonic()
    tree[0].kill()
    client = _client(svc, key)
    while True:
        found = deployer.find_deployment(name).status.server
        if found is not None and found.pid != tree[0].pid:
            try:
                client.models.list()
                break
            except openai.APIError:
                pass
        assert time.monotonic() - t0 < VLLM_TIMEOUT, "the server was not restarted"
        time.sleep(1)
    _progress(f"healed in {time.monotonic() - t0:.0f} s")
    assert wait_gone(tree, 10) == [], "processes of the killed server outlived it"
    assert psutil.Process(found.pid).environ().get("VLLM_API_KEY") == key
    assert (
        "Paris"
        in client.completions.create(model="smollm2", prompt=PROMPT, max_tokens=4).choices[0].text
    )
    assert key.encode() not in (svc.workdir / "supervise.json").read_bytes()
    # The restarted server serves the adapters of the last (in-place) update.
    assert [m.id for m in client.models.list()] == ["smollm2", "smol-a"]


def test_update_under_load_zero_failed(served: dict[str, Any]) -> None:
    """A new served name rolls out while a client loops on the URL: zero failed requests (two
    vLLM servers at once meanwhile), the new name after, the old server's processes gone."""
    from zenml_model_deployers.flavors import get_deployer

    deployer, name = get_deployer("zmd-vllm"), served["name"]
    svc = deployer.find_deployment(name)
    old_tree = server_tree(svc.status.server.pid)
    cfg = svc.config.model_copy(update={"served_model_name": "smollm2-b"})
    # Short answers (vLLM's default max_tokens fills the context: ~500 tokens, 20-40 s here).
    new, loop, seconds = update_under_loop(deployer, svc, cfg, SHORT_CHAT, VLLM_TIMEOUT)
    _progress(f"updated in {seconds:.0f} s, {loop.ok} requests served meanwhile")
    assert loop.failures == [], f"{len(loop.failures)} failed requests: {loop.failures[:3]}"
    assert loop.ok >= 3
    assert new.prediction_url == svc.prediction_url
    assert new.status.revision == svc.status.revision + 1
    assert new.complete("Hi", max_tokens=2)["model"] == "smollm2-b"
    assert wait_gone(old_tree, 30) == [], "the old revision's processes outlived the update"
    served["svc"] = new


def test_failed_update_keeps_serving(served: dict[str, Any], tmp_path: Path) -> None:
    """Weights vLLM cannot read: a typed error with vLLM's own words, the serving revision
    untouched, no process of the failed server left."""
    from zenml_model_deployers.flavors import get_deployer

    deployer, name = get_deployer("zmd-vllm"), served["name"]
    svc = deployer.find_deployment(name)
    broken = broken_hf_model(tmp_path)
    with pytest.raises(DeploymentError) as err:
        deployer.deploy(svc.config.model_copy(update={"model_uri": broken}), timeout=VLLM_TIMEOUT)
    assert err.value.backend_message and "safetensors" in str(err.value).lower()
    recorded = deployer.find_deployment(name)
    assert recorded is not None and recorded.status.config_hash == svc.status.config_hash
    assert recorded.complete("Hi", max_tokens=2)["model"] == "smollm2-b"
    left = [
        p for p in psutil.process_iter(["cmdline"]) if broken in " ".join(p.info["cmdline"] or [])
    ]
    assert wait_gone(left, 10) == []


def test_front_killed_stop_delete_leave_no_process(served: dict[str, Any]) -> None:
    """After a kill -9 of the front, stop ends the server and all it started (API server,
    EngineCore, worker) and keeps the record; delete leaves no process and no directory. (A start after a stop runs the same
    launch as a deploy: it is tested with the stand-in, `test_vllm_conformance.py`, to keep this
    module at four vLLM starts.)"""
    from zenml_model_deployers.flavors import get_deployer

    deployer, name = get_deployer("zmd-vllm"), served["name"]
    svc = deployer.find_deployment(name)
    tree = server_tree(svc.status.server.pid)
    relay = psutil.Process(svc.status.relay.pid)
    # kill -9 of the front first: the server (its own session) keeps running, and a stop
    # still finds and ends it with everything it started.
    relay.kill()
    assert wait_gone([relay], 10) == []
    assert all(p.is_running() for p in tree)
    deployer.stop(svc)
    assert wait_gone(tree, 10) == [], "stop left processes of the server"
    stopped = deployer.find_deployment(name)
    assert stopped is not None and stopped.status.state.value != "active"
    with pytest.raises(PredictionError):
        stopped.predict("Hi", timeout=5)
    deployer.delete(stopped)
    assert deployer.find_deployment(name) is None
    assert wait_gone([*tree, relay], 10) == [], "delete left processes"
    assert not stopped.workdir.exists()
