"""The deployment config of `zmd-vllm`: which model `vllm serve` serves and with which flags
(re-exported from service.py, where ZenML recorded its source path)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import ConfigDict, Field, field_validator

from zenml_model_deployers import secrets
from zenml_model_deployers.local.service import LocalDeploymentConfig

# The server reads its API key from this variable, never from argv.
API_KEY_ENV = "VLLM_API_KEY"
# vLLM's CPU build: GiB of memory for the KV cache.
CPU_KVCACHE_ENV = "VLLM_CPU_KVCACHE_SPACE"
# Flags that carry the API key: argv is visible to every user of the host.
_KEY_FLAGS = ("--api-key",)


class VLLMDeploymentConfig(LocalDeploymentConfig):
    """How to serve an LLM with `vllm serve`.

    Every setting left at None is not passed, so vLLM's own default applies.

    Attributes:
        model_uri: a Hugging Face Hub id ("org/model") or a local model directory.
        served_model_name: the model name clients send (default: `model_uri`, as vLLM does).
        dtype: weights/activations dtype ("auto", "half", "bfloat16", "float16", "float32").
        max_model_len: context length (prompt + output tokens).
        gpu_memory_utilization: fraction of GPU memory vLLM may take (vLLM's default: 0.9).
        tensor_parallel_size: GPUs to shard the model over.
        quantization: e.g. "awq", "gptq", "fp8".
        revision: the model's Hub revision (pin a commit sha).
        tokenizer: another tokenizer (Hub id or path).
        trust_remote_code: allow the model repository's own code.
        api_key: a ZenML secret reference (`{{secret.key}}`) to the key clients must send;
            it reaches the server as `VLLM_API_KEY`, never in argv.
        enforce_eager: `--enforce-eager` (no torch.compile, no CUDA graphs). None: on when
            `require_gpu=False` (vLLM's CPU build, where compiling costs minutes at every
            start), else vLLM's default (off).
        cpu_kvcache_space: GiB of memory for the KV cache of vLLM's CPU build (environment
            `VLLM_CPU_KVCACHE_SPACE`); unset, vLLM sizes it from the host's free memory.
        extra_args: further `vllm serve` flags, passed as given (after ours).
        executable: advanced: a command that speaks `vllm serve`'s CLI (default `vllm`).
        require_gpu: refuse to start when no GPU is visible (False for a CPU build or the
            stand-in).
        health_path: vLLM's health endpoint.
    """

    FORMER_SOURCES: ClassVar[tuple[str, ...]] = (
        "zenml_model_deployers.flavors.vllm.service.VLLMDeploymentConfig",
    )

    # A refused plain key must not be echoed by pydantic's error message.
    model_config = ConfigDict(hide_input_in_errors=True)

    served_model_name: str | None = None
    dtype: str | None = None
    max_model_len: int | None = Field(default=None, gt=0)
    gpu_memory_utilization: float | None = Field(default=None, gt=0, le=1)
    tensor_parallel_size: int | None = Field(default=None, gt=0)
    quantization: str | None = None
    revision: str | None = None
    tokenizer: str | None = None
    trust_remote_code: bool = False
    api_key: str | None = None
    enforce_eager: bool | None = None
    cpu_kvcache_space: int | None = Field(default=None, gt=0)
    extra_args: list[str] = Field(default_factory=list)
    executable: str = "vllm"
    require_gpu: bool = True
    health_path: str = "/health"

    @field_validator("api_key")
    @classmethod
    def _reference_only(cls, v: str | None) -> str | None:
        if v is not None and not secrets.is_secret_reference(v):
            # Never echo the value: it may be the key itself.
            raise ValueError(
                "api_key must be a ZenML secret reference such as '{{vllm_secret.api_key}}' "
                "(a plain key would be stored in the service and the artifact); create it "
                "with `zenml secret create vllm_secret -i` (key `api_key`, its value at a prompt that does not echo)."
            )
        return v

    @field_validator("extra_args")
    @classmethod
    def _no_key_in_argv(cls, v: list[str]) -> list[str]:
        for arg in v:
            if arg.split("=", 1)[0] in _KEY_FLAGS:
                raise ValueError(
                    "extra_args must not carry --api-key (argv is visible in the process "
                    "list): use api_key='{{secret.key}}', which reaches the server by env."
                )
        return v

    @field_validator("env")
    @classmethod
    def _key_env_is_reference(cls, v: dict[str, str]) -> dict[str, str]:
        key = v.get(API_KEY_ENV)
        if key is not None and not secrets.is_secret_reference(key):
            raise ValueError(
                f"env {API_KEY_ENV} must be a ZenML secret reference; better: use api_key=."
            )
        return v

    @property
    def eager(self) -> bool:
        """Whether `--enforce-eager` is passed (see `enforce_eager`)."""
        return self.enforce_eager if self.enforce_eager is not None else not self.require_gpu

    @property
    def model_name_served(self) -> str:
        """The name clients put in `model` (what `/v1/models` lists)."""
        return self.served_model_name or self.model_uri
