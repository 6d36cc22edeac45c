"""`vllm_deployer_step`: serve an LLM with `vllm serve` behind a stable URL (flavor `zmd-vllm`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from zenml import step

from zenml_model_deployers.materializer import ServiceMaterializer
from zenml_model_deployers.service import DeploymentService

from ._body import deploy_with


@step(enable_cache=False, output_materializers=ServiceMaterializer)
def vllm_deployer_step(
    model: Any,
    served_model_name: str | None = None,
    dtype: str | None = None,
    max_model_len: int | None = None,
    gpu_memory_utilization: float | None = None,
    tensor_parallel_size: int | None = None,
    quantization: str | None = None,
    revision: str | None = None,
    tokenizer: str | None = None,
    trust_remote_code: bool = False,
    api_key: str | None = None,
    enforce_eager: bool | None = None,
    uni_executor: bool = False,
    cpu_kvcache_space: int | None = None,
    lora_adapters: dict[str, str] | None = None,
    enable_lora: bool | None = None,
    max_lora_rank: int | None = None,
    max_loras: int | None = None,
    extra_args: list[str] | None = None,
    port: int | None = None,
    env: dict[str, str] | None = None,
    executable: str = "vllm",
    require_gpu: bool = True,
    deployment_name: str | None = None,
    model_name: str = "",
    deploy_decision: bool = True,
    policy: str = "update",
    timeout: float | None = None,
    smoke_input: Any = None,
) -> Annotated[DeploymentService, "vllm_deployment"]:
    """Starts `vllm serve` as a managed local process and returns once it serves.

    The step returns as soon as the server answers `GET /health` and `GET /v1/models` lists
    the served name: the server keeps running after the pipeline ends. A later run with another
    model, revision or setting rolls out with no failed request (the old server serves until
    the new one answers); two LLM servers at once need the memory for both, else use
    `policy="replace"`.

    Args:
        model: a Hub id ("org/model"), a local model directory, or an artifact holding either
            (or a model object with `save_pretrained`).
        served_model_name: the name clients send as `model` (default: `model`).
        dtype: e.g. "auto", "half", "bfloat16".
        max_model_len: context length.
        gpu_memory_utilization: fraction of GPU memory vLLM may use (vLLM's default 0.9).
        tensor_parallel_size: GPUs to shard over.
        quantization: e.g. "awq", "gptq", "fp8".
        revision: the Hub revision to serve (pin a commit sha).
        tokenizer: another tokenizer (Hub id or path).
        trust_remote_code: allow the repository's own code.
        api_key: a ZenML secret reference (`{{secret.key}}`) to the key clients must send;
            it reaches the server as `VLLM_API_KEY`, never in argv or any record.
        enforce_eager: `--enforce-eager`; None: on where no GPU is required (CPU builds,
            where torch.compile costs minutes at every start), else vLLM's default.
        uni_executor: vLLM's `uni` executor (the model in the EngineCore process, no worker
            process; V1 multiprocessing off; `OMP_NUM_THREADS` the cores less one unless set).
            Opt-in: faster start and less memory on CPU, slower streaming (see the docs).
        cpu_kvcache_space: GiB for the KV cache of vLLM's CPU build
            (`VLLM_CPU_KVCACHE_SPACE`; unset: vLLM sizes it from free memory).
        lora_adapters: LoRA adapters served beside the model, name -> adapter folder or Hub
            id (clients send the name as `model`). A run that changes only these loads and
            unloads them in the running server: no restart.
        enable_lora: start able to take adapters (None: on when `lora_adapters` is set).
        max_lora_rank: the highest adapter rank (`--max-lora-rank`).
        max_loras: adapters in one batch (`--max-loras`).
        extra_args: further `vllm serve` flags, passed as given.
        port: pin the public port (default: a free one, kept across updates).
        env: server environment; values may be `{{secret.key}}` references (e.g. `HF_TOKEN`).
        executable: advanced: a command that speaks `vllm serve`'s CLI (default `vllm`).
        require_gpu: refuse at once when no GPU is visible (False for CPU builds, stand-ins).
        deployment_name: stable name (default: derived from the model name).
        model_name: the model's name (default: `served_model_name`, else the last part of
            `model`, e.g. "Qwen2.5-0.5B-Instruct" -> deployment "qwen2-5-0-5b-instruct").
        deploy_decision: False keeps what serves now.
        policy: update (default), replace, side_by_side or fail.
        timeout: seconds to wait until it serves (default: the component's, 20 min).
        smoke_input: a prompt or messages that must complete before the revision is ready.

    Returns:
        The service (saved in full as an artifact; no key in it).
    """
    settings: dict[str, Any] = {
        "served_model_name": served_model_name,
        "dtype": dtype,
        "max_model_len": max_model_len,
        "gpu_memory_utilization": gpu_memory_utilization,
        "tensor_parallel_size": tensor_parallel_size,
        "quantization": quantization,
        "revision": revision,
        "tokenizer": tokenizer,
        "trust_remote_code": trust_remote_code,
        "api_key": api_key,
        "enforce_eager": enforce_eager,
        "uni_executor": uni_executor,
        "cpu_kvcache_space": cpu_kvcache_space,
        "lora_adapters": lora_adapters or {},
        "enable_lora": enable_lora,
        "max_lora_rank": max_lora_rank,
        "max_loras": max_loras,
        "extra_args": extra_args or [],
        "port": port,
        "env": env or {},
        "executable": executable,
        "require_gpu": require_gpu,
    }
    is_reference = isinstance(model, str | Path)
    return deploy_with(
        "zmd-vllm",
        model=None if is_reference else model,
        model_uri=str(model) if is_reference else None,
        deployment_name=deployment_name,
        # An LLM deployment is named after what it serves, not after the pipeline.
        model_name=model_name
        or served_model_name
        or (Path(str(model)).name if is_reference else ""),
        deploy_decision=deploy_decision,
        policy=policy,
        timeout=timeout,
        settings=settings,
        smoke_input=smoke_input,
    )
