"""Shared by the zmd-vllm tests: stand-in configs (real SmolLM2-135M on CPU) and fixtures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zenml_model_deployers.flavors.vllm.config import VLLMDeploymentConfig
from zenml_model_deployers.testing.vllm_standin import standin_command

SMOL = "HuggingFaceTB/SmolLM2-135M-Instruct"
# Short answers: each generated token costs ~50-100 ms on 2 shared cores.
CHAT = {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 1, "temperature": 0}


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
