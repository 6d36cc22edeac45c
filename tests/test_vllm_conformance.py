"""The conformance suite against `zmd-vllm`, served by the stand-in: real SmolLM2-135M
completions on CPU through real OpenAI-compatible servers on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psutil
import pytest
from vllm_support import CHAT, corrupt_model, standin_config

from zenml_model_deployers.flavors.vllm.config import VLLMDeploymentConfig
from zenml_model_deployers.service import DeploymentService
from zenml_model_deployers.testing.conformance import LocalProcessConformance


@pytest.fixture(scope="module")
def vllm_deployer(zenml_env: Path) -> Any:
    from zenml_model_deployers.flavors import ensure_deployer_stack, get_deployer

    ensure_deployer_stack("zmd-test-vllm", "zmd-test-vllm", "zmd-vllm", {"default_timeout": 120})
    return get_deployer("zmd-vllm")


class TestVLLMConformance(LocalProcessConformance):
    """zmd-vllm passes the suite; variants a and b differ by served model name."""

    sample_input = CHAT
    name_prefix = "llm"
    # A completion costs 0.1-0.3 s on 2 shared cores and an update ~2 s.
    update_min_requests = 3

    @pytest.fixture
    def deployer(self, vllm_deployer: Any) -> Any:
        return vllm_deployer

    @pytest.fixture
    def stack_with_deployer(self, vllm_deployer: Any) -> str:
        from zenml_model_deployers.flavors import ensure_deployer_stack

        ensure_deployer_stack("zmd-test-vllm", "zmd-test-vllm", "zmd-vllm")
        return "zmd-test-vllm"

    def make_config(self, variant: str, name: str, **overrides: Any) -> VLLMDeploymentConfig:
        if variant == "broken":
            from zenml.utils.io_utils import get_global_config_directory

            overrides.setdefault("model_uri", corrupt_model(Path(get_global_config_directory())))
        return standin_config(name, served_model_name=f"smol-{variant}", **overrides)

    def _predict(self, service: DeploymentService) -> Any:
        answer = service.complete(self.sample_input)  # type: ignore[attr-defined]
        return {"model": answer["model"], "answered": bool(answer["text"].strip())}

    def expected(self, variant: str) -> Any:
        return {"model": f"smol-{variant}", "answered": True}

    def secret_overrides(self, ref: str) -> dict[str, Any]:
        return {"api_key": ref}

    def assert_secret_delivered(self, service: DeploymentService, value: str) -> None:
        """The server got the key as VLLM_API_KEY; no process on the host has it in argv."""
        assert service.status.server is not None  # type: ignore[attr-defined]
        env = psutil.Process(service.status.server.pid).environ()  # type: ignore[attr-defined]
        assert env.get("VLLM_API_KEY") == value
        for p in psutil.process_iter(["cmdline"]):
            assert value not in " ".join(p.info["cmdline"] or []), f"key in argv of {p.pid}"
