"""zmd-vllm without any server: the exact `vllm serve` argv, validation, host checks."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from zenml_model_deployers.errors import ConfigurationError, PredictionError
from zenml_model_deployers.flavors.vllm.config import VLLMDeploymentConfig
from zenml_model_deployers.flavors.vllm.service import VLLMDeploymentService
from zenml_model_deployers.local.service import LocalDeploymentStatus

HEAD = ["vllm", "serve", "org/model", "--host", "127.0.0.1", "--port", "9000"]
UNI = ["--distributed-executor-backend", "uni"]


def _service(**settings: Any) -> VLLMDeploymentService:
    cfg = VLLMDeploymentConfig(deployment_name="llm", model_uri="org/model", **settings)
    return VLLMDeploymentService(uuid=uuid4(), config=cfg, status=LocalDeploymentStatus())


def _argv(**settings: Any) -> list[str]:
    return _service(**settings).server_command(9000)


def test_defaults_pass_no_flag() -> None:
    """Unset settings are not passed: vLLM's own defaults apply."""
    assert _argv() == HEAD


@pytest.mark.parametrize(
    ("settings", "tail"),
    [
        ({"served_model_name": "chat"}, ["--served-model-name", "chat"]),
        ({"dtype": "bfloat16"}, ["--dtype", "bfloat16"]),
        ({"max_model_len": 4096}, ["--max-model-len", "4096"]),
        ({"gpu_memory_utilization": 0.45}, ["--gpu-memory-utilization", "0.45"]),
        ({"tensor_parallel_size": 2}, ["--tensor-parallel-size", "2"]),
        ({"quantization": "awq"}, ["--quantization", "awq"]),
        ({"revision": "abc123"}, ["--revision", "abc123"]),
        ({"tokenizer": "org/tok"}, ["--tokenizer", "org/tok"]),
        ({"trust_remote_code": True}, ["--trust-remote-code"]),
        ({"extra_args": ["--enforce-eager", "--seed", "7"]}, ["--enforce-eager", "--seed", "7"]),
        ({"enforce_eager": True}, ["--enforce-eager"]),
        # A CPU build (no GPU required): eager by default, unless told otherwise.
        ({"require_gpu": False}, ["--enforce-eager"]),
        ({"require_gpu": False, "enforce_eager": False}, []),
        ({"require_gpu": False, "extra_args": ["--enforce-eager"]}, ["--enforce-eager"]),
        # vLLM's `uni` executor: opt-in; a backend of the user's own in extra_args wins.
        ({"uni_executor": True}, UNI),
        (
            {"uni_executor": True, "extra_args": ["--distributed-executor-backend=mp"]},
            ["--distributed-executor-backend=mp"],
        ),
        ({"cpu_kvcache_space": 2}, []),
        ({"enable_lora": True}, ["--enable-lora"]),
        (
            {"lora_adapters": {"a": "/ad/a", "b": "org/b"}, "max_lora_rank": 8, "max_loras": 2},
            ["--enable-lora", "--max-lora-rank", "8", "--max-loras", "2"]
            + ["--lora-modules", "a=/ad/a", "b=org/b"],
        ),
    ],
)
def test_each_setting_is_one_flag(settings: dict[str, Any], tail: list[str]) -> None:
    """Each setting becomes exactly its `vllm serve` flag, after host and port."""
    assert _argv(**settings) == HEAD + tail


# Every setting that becomes a flag, with a value vLLM's parser takes.
EVERY_FLAG_SETTING: dict[str, Any] = {
    "served_model_name": "chat",
    "dtype": "half",
    "max_model_len": 2048,
    "gpu_memory_utilization": 0.5,
    "tensor_parallel_size": 1,
    "quantization": "fp8",
    "revision": "r1",
    "tokenizer": "t",
    "trust_remote_code": True,
}
LORA = {"lora_adapters": {"a": "/ad/a", "b": "/ad/b"}, "max_lora_rank": 8, "max_loras": 2}


def test_all_settings_order_and_executable_command() -> None:
    """A multi-word executable is split like a shell would; extra args come last."""
    argv = _argv(
        executable="/opt/py -m vllm.entrypoints.cli.main",
        **EVERY_FLAG_SETTING,
        extra_args=["--enforce-eager"],
    )
    assert argv == [
        "/opt/py", "-m", "vllm.entrypoints.cli.main", "serve", "org/model",
        "--host", "127.0.0.1", "--port", "9000",
        "--served-model-name", "chat",
        "--dtype", "half",
        "--max-model-len", "2048",
        "--gpu-memory-utilization", "0.5",
        "--tensor-parallel-size", "1",
        "--quantization", "fp8",
        "--revision", "r1",
        "--tokenizer", "t",
        "--trust-remote-code",
        "--enforce-eager",
    ]  # fmt: skip


def test_api_key_is_never_in_argv_and_must_be_a_reference() -> None:
    """The key goes by env; a plain key, or one in extra_args/env, is refused without echo."""
    argv = _argv(api_key="{{llm.key}}")
    assert argv == HEAD and not any("llm.key" in a or "api-key" in a for a in argv)
    for bad in (
        {"api_key": "sk-plain-value-123"},
        {"extra_args": ["--api-key", "x"]},
        {"extra_args": ["--api-key=x"]},
        {"env": {"VLLM_API_KEY": "sk-plain-value-123"}},
    ):
        with pytest.raises(ValueError) as err:
            _argv(**bad)
        assert "sk-plain-value-123" not in str(err.value)


def test_requests_by_input_shape() -> None:
    """A prompt is a completion, messages a chat completion; `model` only when the caller
    names one (the server then answers with the model it serves, whatever its name)."""
    svc = _service(served_model_name="chat")
    assert svc.build_request("Hi", max_tokens=3) == (
        "/v1/completions",
        {"prompt": "Hi", "max_tokens": 3},
    )
    msgs = [{"role": "user", "content": "Hi"}]
    assert svc.build_request(msgs) == ("/v1/chat/completions", {"messages": msgs})
    assert svc.build_request({"messages": msgs, "model": "other"})[1]["model"] == "other"
    with pytest.raises(PredictionError):
        svc.build_request(42)


def test_missing_executable_refused_at_once(zenml_env: Path) -> None:
    """No `vllm` here: deploy fails before anything starts, saying so and how to install."""
    from zenml_model_deployers.flavors import get_deployer

    deployer = get_deployer("zmd-vllm")
    cfg = VLLMDeploymentConfig(
        deployment_name="no-vllm", model_uri="org/model", executable="zmd-no-such-vllm"
    )
    with pytest.raises(ConfigurationError) as err:
        deployer.deploy(cfg, timeout=30)
    msg = str(err.value)
    assert "'zmd-no-such-vllm' was not found" in msg and "pip install vllm" in msg
    assert deployer.find_deployment("no-vllm") is None


def test_no_gpu_refused_at_once(zenml_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An executable that exists but no visible GPU: refused at once, saying which."""
    from zenml_model_deployers.flavors import get_deployer

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    deployer = get_deployer("zmd-vllm")
    cfg = VLLMDeploymentConfig(
        deployment_name="no-gpu", model_uri="org/model", executable=sys.executable
    )
    with pytest.raises(ConfigurationError) as err:
        deployer.deploy(cfg, timeout=30)
    assert "No GPU is visible" in str(err.value) and "CUDA_VISIBLE_DEVICES" in str(err.value)
    assert "require_gpu=False" in str(err.value)
    assert deployer.find_deployment("no-gpu") is None


def test_progress_shows_the_server_log_last_line(tmp_path: Path) -> None:
    """While a server loads, progress shows its log's last line: redacted, shortened."""
    from zenml_model_deployers import secrets
    from zenml_model_deployers.local.readiness import _last_line

    secrets.remember_secret_value("sk-progress-secret")
    log = tmp_path / "server.log"
    log.write_text("INFO starting\nINFO Loading weights with sk-progress-secret\n\n")
    assert _last_line(log) == "INFO Loading weights with ***"
    log.write_text("x" * 500 + "\n")
    assert _last_line(log, width=40) == "x" * 37 + "..."
    assert _last_line(tmp_path / "missing.log") == ""


def test_cpu_kvcache_space_goes_by_environment() -> None:
    """`cpu_kvcache_space` reaches the server as VLLM_CPU_KVCACHE_SPACE; unset, none is set
    by the flavor (vLLM's own sizing applies)."""
    assert _service(cpu_kvcache_space=2).server_env()["VLLM_CPU_KVCACHE_SPACE"] == "2"
    env = _service().server_env()
    assert env.get("VLLM_CPU_KVCACHE_SPACE") == os.environ.get("VLLM_CPU_KVCACHE_SPACE")


def test_vllm_log_root_cause(tmp_path: Path) -> None:
    """A failed start's cause is the child's exception (vLLM prefixes each line with its
    process), not the API server's "see root cause above"."""
    log = tmp_path / "server.log"
    log.write_text(
        "(Worker pid=21276) ERROR 12-06 11:14:05 [multiproc_executor.py:953] Traceback:\n"
        '(Worker pid=21276) ERROR 12-06 11:14:05 [multiproc_executor.py:953]   File "x.py"\n'
        "(Worker pid=21276) ERROR 12-06 11:14:05 [multiproc_executor.py:953] ValueError: "
        "weights do not fit the config\n"
        "(EngineCore pid=21148) ERROR 12-06 11:14:08 [core.py:1510] Exception: WorkerProc "
        "initialization failed due to an exception in a background process.\n"
        "RuntimeError: Engine core initialization failed. See root cause above. Failed core "
        "proc(s): {'EngineCore': 1}\n"
    )
    cause = _service().failure_cause(log)
    assert cause == "ValueError: weights do not fit the config"


# vLLM's own `vllm serve` parser, without starting anything: what it makes of an argv.
_VLLM_PARSE = """
import json, sys
from vllm.entrypoints.cli.serve import ServeSubcommand
from vllm.utils.argparse_utils import FlexibleArgumentParser
parser = FlexibleArgumentParser(prog="vllm")
ServeSubcommand().subparser_init(parser.add_subparsers(dest="subparser"))
a = parser.parse_args(sys.argv[1:])
print(json.dumps({k: getattr(a, k) for k in sys.stdin.read().split()}, default=vars))
"""


def test_argv_parses_alike_in_vllm_and_the_standin() -> None:
    """The argv the flavor builds from every setting is valid for the real `vllm serve` (its
    own parser) and for the stand-in, and both read the settings the stand-in honours alike."""
    import json
    import subprocess

    from vllm_support import VLLM, require_real_vllm

    from zenml_model_deployers.testing.vllm_standin import _parser

    require_real_vllm()
    argv = _argv(
        **EVERY_FLAG_SETTING,
        **LORA,
        require_gpu=False,
        uni_executor=True,
        extra_args=["--seed", "7"],
    )
    keys = ["model_tag", "host", "port", "served_model_name", "max_model_len", "seed"]
    lora = ["enable_lora", "max_lora_rank", "max_loras", "lora_modules"]
    python = str(VLLM.parent / "python")
    out = subprocess.run(
        [python, "-c", _VLLM_PARSE, *argv[1:]],
        input=" ".join(
            [
                *keys,
                *lora,
                "enforce_eager",
                "dtype",
                "trust_remote_code",
                "distributed_executor_backend",
            ]
        ),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    real = json.loads(out.stdout.strip().splitlines()[-1])
    assert real["enforce_eager"] is True and real["dtype"] == "half" and real["trust_remote_code"]
    assert real["distributed_executor_backend"] == "uni"
    assert real["enable_lora"] and real["max_lora_rank"] == 8 and real["max_loras"] == 2
    assert [(m["name"], m["path"]) for m in real["lora_modules"]] == [
        ("a", "/ad/a"),
        ("b", "/ad/b"),
    ]
    standin = vars(_parser().parse_args(argv[1:]))
    standin["model_tag"] = standin.pop("model")
    assert {k: real[k] for k in keys} == {k: standin[k] for k in keys}


def test_uni_executor_env() -> None:
    """The `uni` executor turns vLLM's V1 multiprocessing off (else vLLM's CPU platform turns
    `uni` back into `mp`) and sizes the engine's OpenMP threads as vLLM's `auto` binding sizes a
    worker's (the usable cores less one, at least one); a user's own values are kept; off by
    default."""
    cores = len(os.sched_getaffinity(0))
    env = _service(uni_executor=True).server_env()
    assert env["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    assert env["OMP_NUM_THREADS"] == str(max(1, cores - 1))
    own = _service(
        uni_executor=True, env={"VLLM_ENABLE_V1_MULTIPROCESSING": "1", "OMP_NUM_THREADS": "3"}
    ).server_env()
    assert own["VLLM_ENABLE_V1_MULTIPROCESSING"] == "1" and own["OMP_NUM_THREADS"] == "3"
    for default in (_service(), _service(require_gpu=False)):
        assert "VLLM_ENABLE_V1_MULTIPROCESSING" not in default.server_env()
        assert "--distributed-executor-backend" not in default.server_command(9000)


def test_lora_settings_env_and_validation() -> None:
    """Adapters open vLLM's runtime adapter routes (by env) and the front closes them to
    clients; a name clash with the served model, or adapters with LoRA off, are refused."""
    svc = _service(lora_adapters={"a": "/ad/a"})
    assert svc.server_env()["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING" not in _service().server_env()
    assert "/v1/load_lora_adapter" in svc.front.closed_paths
    for bad in (
        {"served_model_name": "a", "lora_adapters": {"a": "/ad/a"}},
        {"enable_lora": False, "lora_adapters": {"a": "/ad/a"}},
        {"lora_adapters": {"a=b": "/ad/a"}},
        {"lora_adapters": {"a": " "}},
    ):
        with pytest.raises(ValueError):
            _service(**bad)


def test_adapters_only_change_is_detected() -> None:
    """Only a change of adapters, on a server that takes them, is applied in place."""
    from zenml_model_deployers.flavors.vllm.lora import adapters_only_change

    old = _service(lora_adapters={"a": "/ad/a"}).config
    recorded = old.model_dump(mode="json")
    assert adapters_only_change(recorded, old.model_copy(update={"lora_adapters": {"b": "/b"}}))
    # The last adapter gone: a server without LoRA (a restart), unless enable_lora stays on.
    assert not adapters_only_change(recorded, old.model_copy(update={"lora_adapters": {}}))
    kept = old.model_copy(update={"enable_lora": True})
    assert adapters_only_change(
        kept.model_dump(mode="json"), kept.model_copy(update={"lora_adapters": {}})
    )
    assert not adapters_only_change(recorded, old.model_copy(update={"max_model_len": 99}))
    assert not adapters_only_change(
        recorded, old.model_copy(update={"enable_lora": False, "lora_adapters": {}})
    )
    no_lora = _service().config
    assert not adapters_only_change(
        no_lora.model_dump(mode="json"), no_lora.model_copy(update={"lora_adapters": {"a": "/a"}})
    )
    assert not adapters_only_change(None, old)


def test_settings_added_later_keep_the_revision_of_deployments_made_before() -> None:
    """A config without the LoRA settings or uni_executor hashes as before they existed (the
    hash below is this config's under the fields before them): a redeploy restarts no vLLM."""
    from zenml_model_deployers.flavors.vllm.config import VLLMDeploymentConfig

    cfg = VLLMDeploymentConfig(deployment_name="x", model="/m", require_gpu=False)
    assert cfg.config_hash() == "4350e4d7375b934a"
    for changed in ({"uni_executor": True}, {"lora_adapters": {"a": "/a"}}, {"max_loras": 2}):
        assert cfg.model_copy(update=changed).config_hash() != cfg.config_hash(), changed
    # The CLI's ZenML-free describe reads the stored dump: it shows the same serving settings.
    from zenml_model_deployers.provenance import local_serving_fields

    for c in (cfg, cfg.model_copy(update={"uni_executor": True, "max_loras": 2})):
        assert local_serving_fields(c.model_dump(mode="json")) == c.serving_fields()
