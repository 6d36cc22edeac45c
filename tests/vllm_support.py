"""Shared by the zmd-vllm tests: the real vLLM (CPU build, `make vllm`) serving SmolLM2-135M,
and the stand-in (llama.cpp) for the conformance suite."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from zenml_model_deployers.flavors.vllm.config import VLLMDeploymentConfig
from zenml_model_deployers.testing.vllm_standin import standin_command

SMOL = "HuggingFaceTB/SmolLM2-135M-Instruct"
# Short answers: each generated token costs ~50-100 ms on 2 shared cores.
CHAT = {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 1, "temperature": 0}

ROOT = Path(__file__).resolve().parents[1]
# Made by `make vllm` (a dependency of `make test`): vLLM's CPU build in its own environment, and
# SmolLM2-135M-Instruct converted to a bf16 Hugging Face folder (tests/vllm_model.py).
VLLM = ROOT / ".venv" / "vllm" / "bin" / "vllm"
SMOL_DIR = ROOT / ".venv" / "models" / "smollm2-135m-instruct"
# A start of the real vLLM takes 1-2 minutes on 2 cores (three processes import torch and
# vLLM), 2-3 under load: generous bounds, below pytest's own per-test timeout (600 s), so that a
# start that does not end fails with vLLM's log instead of a killed test.
VLLM_TIMEOUT = 540.0


def require_real_vllm() -> None:
    """Fails (never skips) when `make vllm` did not run: the suite must test the real server."""
    if not VLLM.is_file() or not (SMOL_DIR / "config.json").is_file():
        pytest.fail(
            f"the real vLLM ({VLLM}) or its test model ({SMOL_DIR}) is missing: `make vllm`"
        )


def vllm_settings(**overrides: Any) -> dict[str, Any]:
    """The settings that serve SmolLM2 with the real vLLM on CPU (1 GiB of KV cache: two
    servers fit at once during an update).

    Args:
        **overrides: settings.

    Returns:
        Settings for `vllm_deployer_step` / `VLLMDeploymentConfig`.
    """
    return {
        # vLLM binds its CPU threads to the same core in every server by default (auto): two
        # servers at once (an update) would then share one of the 2 cores.
        "env": {"VLLM_CPU_OMP_THREADS_BIND": "nobind"},
        "served_model_name": "smollm2",
        "max_model_len": 512,
        "dtype": "bfloat16",
        "cpu_kvcache_space": 1,
        "executable": str(VLLM),
        "require_gpu": False,
        **overrides,
    }


def standin_config(name: str, **overrides: Any) -> VLLMDeploymentConfig:
    """A config served by the stand-in (`require_gpu=False`: it runs on CPU).

    Args:
        name: deployment name.
        **overrides: settings.

    Returns:
        The config.
    """
    settings: dict[str, Any] = {
        "model_uri": SMOL,
        "executable": standin_command(),
        "require_gpu": False,
        "max_model_len": 512,
        **overrides,
    }
    return VLLMDeploymentConfig(deployment_name=name, model_name=name, **settings)


def corrupt_model(root: Path) -> str:
    """A GGUF file whose header is garbage: the server fails to load it, in its own words.

    Args:
        root: where to write it.

    Returns:
        Its path.
    """
    path = root / "corrupt" / "model.gguf"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GGUF" + bytes(range(256)) * 64)
    return str(path)


def broken_hf_model(root: Path) -> str:
    """SmolLM2's config and tokenizer with weights whose header is garbage: vLLM fails to
    start on it, in its own words.

    Args:
        root: where to write it.

    Returns:
        The folder.
    """
    folder = root / "broken-smollm2"
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_bytes((SMOL_DIR / name).read_bytes())
    (folder / "model.safetensors").write_bytes(b"\xff" * 8 + b"not a safetensors header")
    return str(folder)


def wait_gone(procs: list[psutil.Process], timeout: float = 30) -> list[psutil.Process]:
    """Waits (bounded) until the processes ended; zombies count as ended.

    Args:
        procs: the processes.
        timeout: seconds.

    Returns:
        Those still alive.
    """

    def alive(p: psutil.Process) -> bool:
        try:
            return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    deadline = time.monotonic() + timeout
    left = [p for p in procs if alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = [p for p in left if alive(p)]
    return left


def server_tree(pid: int) -> list[psutil.Process]:
    """A server and its descendants (vLLM: API server, EngineCore, worker, resource tracker).

    Args:
        pid: the server's pid.

    Returns:
        The processes.
    """
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def make_lora_adapter(folder: Path, seed: int, scale: float) -> str:
    """A rank-8 LoRA adapter of SmolLM2's attention (q_proj, v_proj of its 30 layers) in PEFT's
    format, with random weights: `scale` 0 leaves the base model's answers, 0.5 changes them.

    Args:
        folder: where to write it (adapter_config.json, adapter_model.safetensors).
        seed: the weights' seed.
        scale: the standard deviation of the B matrices.

    Returns:
        The folder.
    """
    import json
    import struct

    import numpy as np

    rng = np.random.default_rng(seed)
    rank, hidden, kv = 8, 576, 192  # SmolLM2-135M: 9 heads and 3 KV heads of 64
    tensors: dict[str, np.ndarray] = {}
    for layer in range(30):
        for module, out in (("q_proj", hidden), ("v_proj", kv)):
            key = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            tensors[f"{key}.lora_A.weight"] = rng.standard_normal((rank, hidden)) * 0.05
            tensors[f"{key}.lora_B.weight"] = rng.standard_normal((out, rank)) * scale
    # safetensors by hand (no dependency): a JSON header of offsets, then the raw tensors.
    header: dict[str, Any] = {}
    blobs, offset = [], 0
    for name, t in tensors.items():
        data = t.astype("<f4").tobytes()
        header[name] = {
            "dtype": "F32",
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_model.safetensors").write_bytes(
        struct.pack("<Q", len(head)) + head + b"".join(blobs)
    )
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": rank,
        "lora_alpha": 16,
        "lora_dropout": 0.0,
        "bias": "none",
        "target_modules": ["q_proj", "v_proj"],
        "base_model_name_or_path": str(SMOL_DIR),
    }
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return str(folder)


def update_under_loop(
    deployer: Any, svc: Any, config: Any, request: Any, timeout: float
) -> tuple[Any, Any, float]:
    """Deploys `config` over `svc` while a client loops on its URL (one request at a time).

    Args:
        deployer: the zmd-vllm deployer.
        svc: the serving deployment.
        config: the new config.
        request: what the client sends (`svc.format_request`'s input: messages or a request).
        timeout: seconds for the deploy (and bound of the loop).

    Returns:
        (the new service, the finished RequestLoop: `ok`, `failures`, seconds of the deploy).
    """
    from zenml_model_deployers.testing.request_loop import RequestLoop

    headers, body = svc.format_request(request)
    t0 = time.monotonic()
    # A short answer beside a starting server on 2 busy cores can take over 30 s: a failure
    # here is a refused or broken request, not a slow one.
    with RequestLoop(
        svc.prediction_url, body, headers, max_seconds=timeout, request_timeout=120
    ) as loop:
        new = deployer.deploy(config, timeout=timeout)
        seconds = time.monotonic() - t0
        time.sleep(0.5)  # requests after the switch count too
    return new, loop, seconds
