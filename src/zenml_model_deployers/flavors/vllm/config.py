"""The deployment config of `zmd-vllm`: which model `vllm serve` serves and with which flags
(re-exported from service.py, where ZenML recorded its source path)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import ConfigDict, Field, field_validator, model_validator

from zenml_model_deployers import secrets
from zenml_model_deployers.local.service import LocalDeploymentConfig

# The server reads its API key from this variable, never from argv.
API_KEY_ENV = "VLLM_API_KEY"
# vLLM's CPU build: GiB of memory for the KV cache.
CPU_KVCACHE_ENV = "VLLM_CPU_KVCACHE_SPACE"
# Opens vLLM's routes that load and unload LoRA adapters in a running server.
RUNTIME_LORA_ENV = "VLLM_ALLOW_RUNTIME_LORA_UPDATING"
# "0" keeps the `uni` executor on vLLM's CPU platform (see `uni_executor`).
MULTIPROCESSING_ENV = "VLLM_ENABLE_V1_MULTIPROCESSING"
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
        uni_executor: vLLM's one-process executor: the model runs in the EngineCore process
            (`--distributed-executor-backend uni`, with `VLLM_ENABLE_V1_MULTIPROCESSING=0`,
            without which vLLM's CPU platform turns `uni` back into `mp`), so the server is two
            processes (API server, EngineCore) instead of three (and a worker). vLLM's OpenMP
            binding does not apply to it, so `OMP_NUM_THREADS` defaults to the usable cores
            less one, as vLLM's `auto` binding gives a worker. Opt-in (default off): on 2 CPU
            cores it started ~12 % faster and took 0.6 GiB less, but streamed 0.89x as fast
            (6x slower without that thread count); see the flavor's page.
        cpu_kvcache_space: GiB of memory for the KV cache of vLLM's CPU build (environment
            `VLLM_CPU_KVCACHE_SPACE`); unset, vLLM sizes it from the host's free memory.
        lora_adapters: LoRA adapters served beside the base model, name -> adapter (a
            PEFT folder, or a Hub id): a client sends the name as `model`. An update that
            changes only these loads and unloads adapters in the running server (no restart).
        enable_lora: start the server able to take LoRA adapters (`--enable-lora`, and the
            runtime loading routes, which the deployment's URL never exposes). None: on when
            `lora_adapters` is not empty. Set True to add the first adapter later without a
            restart.
        max_lora_rank: the highest rank of an adapter (`--max-lora-rank`; vLLM's default 16).
        max_loras: adapters in one batch (`--max-loras`; vLLM's default 1).
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
    uni_executor: bool = False
    cpu_kvcache_space: int | None = Field(default=None, gt=0)
    lora_adapters: dict[str, str] = Field(default_factory=dict)
    enable_lora: bool | None = None
    max_lora_rank: int | None = Field(default=None, gt=0)
    max_loras: int | None = Field(default=None, gt=0)
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

    @field_validator("lora_adapters")
    @classmethod
    def _adapter_names(cls, v: dict[str, str]) -> dict[str, str]:
        for name, path in v.items():
            if not name.strip() or not path.strip() or "=" in name or " " in name:
                raise ValueError(
                    f"lora_adapters: {name!r} -> {path!r}: a name (no '=' or space) and the "
                    "adapter's folder or Hub id are both needed."
                )
        return v

    @model_validator(mode="after")
    def _lora_consistent(self) -> VLLMDeploymentConfig:
        if self.lora_adapters and self.enable_lora is False:
            raise ValueError("lora_adapters needs enable_lora (left at None, it is on).")
        if self.model_name_served in self.lora_adapters:
            raise ValueError(
                f"the LoRA adapter {self.model_name_served!r} has the base model's served name."
            )
        return self

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
    def lora(self) -> bool:
        """Whether the server takes LoRA adapters (see `enable_lora`)."""
        return self.enable_lora if self.enable_lora is not None else bool(self.lora_adapters)

    @property
    def model_name_served(self) -> str:
        """The name clients put in `model` (what `/v1/models` lists)."""
        return self.served_model_name or self.model_uri
