"""An LLM served by the `vllm serve` CLI (OpenAI-compatible API) behind the deployment's relay.

The CLI is vLLM's stable contract: nothing here imports vLLM. The server's API key reaches it
by environment (``VLLM_API_KEY``), never by argv, so it never shows in the process list.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any, ClassVar

import requests
from pydantic import PrivateAttr
from zenml.models.v2.misc.service import ServiceType

from zenml_model_deployers import secrets
from zenml_model_deployers.errors import ConfigurationError, DeploymentError, PredictionError
from zenml_model_deployers.flavors.vllm.config import (
    API_KEY_ENV,
    CPU_KVCACHE_ENV,
    MULTIPROCESSING_ENV,
    RUNTIME_LORA_ENV,
)

# The config moved to config.py; ZenML recorded its source path here, so it stays importable.
from zenml_model_deployers.flavors.vllm.config import VLLMDeploymentConfig as VLLMDeploymentConfig
from zenml_model_deployers.flavors.vllm.flavor import FLAVOR_NAME
from zenml_model_deployers.flavors.vllm.lora import (
    ADMIN_PATHS,
    adapters_only_change,
    apply_adapters,
    lora_flags,
)
from zenml_model_deployers.flavors.vllm.preflight import check_host, command_prefix
from zenml_model_deployers.local import process as proc
from zenml_model_deployers.local.service import LocalProcessService
from zenml_model_deployers.local.state import tail
from zenml_model_deployers.local.supervision import adopt_supervision
from zenml_model_deployers.service import serving_type

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
MODELS_PATH = "/v1/models"
# What vLLM (and PyTorch under it) print when the model or its KV cache does not fit.
_OOM = re.compile(
    r"out of memory|OutOfMemoryError|No available memory for the cache blocks|"
    r"insufficient memory|not enough memory|Free memory on device",
    re.IGNORECASE,
)


# vLLM prefixes each line with the process that wrote it, then level, time and source:
# "(EngineCore pid=12) ERROR 12-06 11:14:05 [core.py:1510] ". Tracebacks keep their indent after it.
_VLLM_PREFIX = re.compile(
    r"^\([\w.:-]+ pid=\d+\) (?:(?:DEBUG|INFO|WARNING|ERROR|CRITICAL) [\d-]+ [\d:]+ \[[^\]]*\] )?"
)
# What vLLM's parent processes say when a child failed: the child's exception is the cause.
_VLLM_WRAPPERS = (
    "Engine core initialization failed",
    "WorkerProc initialization failed",
    "Worker failed with error",
)


class VLLMDeploymentService(LocalProcessService):
    """A `vllm serve` OpenAI-compatible server behind a stable URL.

    ``predict`` returns the OpenAI JSON answer as the server sent it (the base's
    ``parse_response``); ``complete`` picks the text out of it.
    """

    SERVICE_TYPE: ClassVar[ServiceType] = serving_type(
        FLAVOR_NAME, "LLM served locally by `vllm serve` (zenml-model-deployers)"
    )
    FLAVOR: ClassVar[str] = FLAVOR_NAME
    PREDICT_PATH: ClassVar[str] = CHAT_PATH
    # A restart keeps vLLM's, the GPU's and the Hugging Face Hub's settings (a gated model's
    # token, the cache) and the proxies a download goes through.
    RESTART_INHERITED_ENV: ClassVar[tuple[str, ...]] = (
        "VLLM_",
        "HF_",
        "HUGGING_FACE_HUB_TOKEN",
        "TRANSFORMERS_",
        "CUDA_",
        "NVIDIA_",
        "NCCL_",
        "OMP_NUM_THREADS",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
    )

    config: VLLMDeploymentConfig

    # (reference, resolved value) of the server's key.
    _server_key: tuple[str, str] | None = PrivateAttr(default=None)

    # ----------------------------------------------------------------- the server
    def server_command(self, port: int) -> list[str]:
        """The exact `vllm serve` argv for this config (no secret in it, ever).

        Args:
            port: private port.

        Returns:
            argv.
        """
        c = self.config
        argv = [*command_prefix(c.executable), "serve", c.model_uri]
        argv += ["--host", "127.0.0.1", "--port", str(port)]
        if c.served_model_name:
            argv += ["--served-model-name", c.served_model_name]
        options: list[tuple[str, Any]] = [
            ("--dtype", c.dtype),
            ("--max-model-len", c.max_model_len),
            ("--gpu-memory-utilization", c.gpu_memory_utilization),
            ("--tensor-parallel-size", c.tensor_parallel_size),
            ("--quantization", c.quantization),
            ("--revision", c.revision),
            ("--tokenizer", c.tokenizer),
        ]
        for flag, value in options:
            if value is not None:
                argv += [flag, str(value)]
        if c.trust_remote_code:
            argv.append("--trust-remote-code")
        if c.eager and "--enforce-eager" not in c.extra_args:
            argv.append("--enforce-eager")
        if c.uni_executor and not any(
            a.split("=", 1)[0] == "--distributed-executor-backend" for a in c.extra_args
        ):
            argv += ["--distributed-executor-backend", "uni"]
        return argv + lora_flags(c) + list(c.extra_args)

    def server_env(self) -> dict[str, str]:
        """The configured env (secrets resolved) plus `VLLM_API_KEY` when a key is set.

        Returns:
            The environment (contains resolved secrets: never log it).
        """
        env = super().server_env()
        env.setdefault("PYTHONUNBUFFERED", "1")
        if self.config.uni_executor:
            # With multiprocessing on, vLLM's CPU platform turns `uni` back into `mp`.
            env.setdefault(MULTIPROCESSING_ENV, "0")
            # vLLM's OpenMP setup (thread count and binding) is made by the `mp` executor for
            # its worker only: unset, the engine's threads would be torch's default (every
            # core, unbound), 6x slower streaming on 2 busy cores than one thread. `auto`
            # binding gives a worker the cores less one (kept for the API server).
            env.setdefault("OMP_NUM_THREADS", str(max(1, len(os.sched_getaffinity(0)) - 1)))
        if self.config.cpu_kvcache_space is not None:
            env[CPU_KVCACHE_ENV] = str(self.config.cpu_kvcache_space)
        if self.config.lora:
            # The adapter routes an update uses (on the private port; the URL refuses them).
            env[RUNTIME_LORA_ENV] = "True"
        key = self.api_key_value()
        if key is not None:
            env[API_KEY_ENV] = key
        return env

    def api_key_value(self) -> str | None:
        """The resolved API key (resolved once per service object, at call time).

        Returns:
            The key, or None when the deployment has none.
        """
        ref = self.config.api_key or self.config.env.get(API_KEY_ENV)
        if ref is None:
            return None
        if self._server_key is None or self._server_key[0] != ref:
            self._server_key = (ref, secrets.resolve(ref))
        return self._server_key[1]

    def _auth_headers(self) -> dict[str, str]:
        key = self.api_key_value()
        return {"Authorization": f"Bearer {key}"} if key else {}

    def closed_paths(self) -> tuple[str, ...]:
        """vLLM's routes that load and unload LoRA adapters: only an update uses them, on the
        server's private port; through the URL a client could load files of the host.

        Returns:
            URL paths.
        """
        return ADMIN_PATHS

    def failure_cause(self, log: Path) -> str:
        """vLLM's own error in a failed server's log: the root cause a child process (the
        EngineCore, a worker) raised, not the API server's "Engine core initialization failed.
        See root cause above".

        Args:
            log: the server's log.

        Returns:
            ``ExceptionName: message``, or "".
        """
        lines = tail(log, 4000, max_bytes=2_000_000).splitlines()
        return proc.failure_cause_in([_VLLM_PREFIX.sub("", ln) for ln in lines], _VLLM_WRAPPERS)

    # ----------------------------------------------------------------- lifecycle hooks
    def provision_revision(self, timeout: float) -> None:
        """Checks the host first, then rolls the revision out (see LocalProcessService).

        A new revision that does not fit next to the serving one (out of memory) says that
        `policy="replace"` is the way.

        Args:
            timeout: seconds.

        Raises:
            DeploymentError: the new revision did not serve (the old one still does).
        """
        check_host(self.config.executable, self.config.require_gpu)
        old_serving = self.status.server is not None and self.status.server.is_alive()
        if old_serving and self._update_adapters_in_place(timeout):
            return
        try:
            super().provision_revision(timeout)
        except DeploymentError as e:
            if type(e) is DeploymentError and _OOM.search(e.backend_message or ""):
                raise DeploymentError(
                    f"The new revision of '{self.deployment_name}' ran out of memory while "
                    "starting" + (" next to the serving one." if old_serving else "."),
                    deployment_name=self.deployment_name,
                    backend_message=e.backend_message,
                    hint=(
                        "two LLM servers at once need the memory for both: deploy with "
                        "policy='replace' (stops the old server first, a short outage), or "
                        "lower gpu_memory_utilization / max_model_len."
                        if old_serving
                        else "lower gpu_memory_utilization or max_model_len, quantize, or use "
                        "a bigger GPU (tensor_parallel_size for several)."
                    ),
                ) from e
            raise

    def _update_adapters_in_place(self, timeout: float) -> bool:
        """An update that changes only LoRA adapters, done in the serving server: adapters
        load and unload there (no restart of the base model, no request fails), its restart
        command takes the new adapters, and the revision is recorded.

        Args:
            timeout: seconds.

        Returns:
            False when this update needs a new server (anything else changed, the server does
            not take adapters, or it is not the plain relayed kind).
        """
        status = self.status
        sup = adopt_supervision(status, self.workdir)
        if (
            not adapters_only_change(status.live_config, self.config)
            or status.direct
            or status.server is None
            or status.server_port is None
            or status.canary_server is not None
            or (sup is not None and sup.get("state") == "restarting")
            or not self.front.alive()
        ):
            return False
        before = VLLMDeploymentConfig.model_validate(status.live_config).lora_adapters
        base = f"http://127.0.0.1:{status.server_port}"
        try:
            apply_adapters(
                base,
                before,
                self.config.lora_adapters,
                self._auth_headers(),
                self.deployment_name,
                timeout=min(timeout, 300.0),
            )
        except requests.RequestException as e:
            raise DeploymentError(
                f"The server of '{self.deployment_name}' did not answer while its LoRA "
                f"adapters changed ({type(e).__name__}: {e}).",
                deployment_name=self.deployment_name,
                hint=f"`zmd models logs {self.deployment_name}` shows the server's log.",
            ) from e
        self.check_serving(base)
        self.changed_in_place(timeout)
        return True

    def start_backend(self, timeout: float) -> None:
        """Checks the host first, then starts the recorded revision on the same URL.

        Args:
            timeout: seconds.
        """
        server_ok = self.status.server is not None and self.status.server.is_alive()
        if not server_ok:
            check_host(self.config.executable, self.config.require_gpu)
        super().start_backend(timeout)

    def check_serving(self, base_url: str) -> None:
        """Ready only once `/v1/models` lists the served name (sent with the API key).

        Args:
            base_url: the new server's private base URL.

        Raises:
            DeploymentError: it answers health but does not serve the expected model.
        """
        want = self.config.model_name_served
        deadline = time.monotonic() + 30
        last = ""
        with requests.Session() as s:
            while True:
                try:
                    r = s.get(base_url + MODELS_PATH, headers=self._auth_headers(), timeout=10)
                    if r.status_code == 200:
                        names = [m.get("id") for m in r.json().get("data", [])]
                        if want in names:
                            return
                        last = f"it lists {names}"
                    else:
                        last = f"HTTP {r.status_code}: {secrets.redact(r.text[:500])}"
                except (requests.RequestException, ValueError) as e:
                    last = f"{type(e).__name__}: {e}"
                if time.monotonic() >= deadline:
                    raise DeploymentError(
                        f"The server of '{self.deployment_name}' is up but GET {MODELS_PATH} "
                        f"does not list '{want}' ({last}).",
                        deployment_name=self.deployment_name,
                        hint="check served_model_name, api_key and the server's log "
                        f"(`zmd models logs {self.deployment_name}`).",
                    )
                time.sleep(0.5)

    # ----------------------------------------------------------------- predictions
    def build_request(self, data: Any, **params: Any) -> tuple[str, dict[str, Any]]:
        """Turns user data into an OpenAI request: path and JSON body.

        - a string: a completion (`/v1/completions`, `prompt`);
        - a list of `{"role", "content"}` messages: a chat completion;
        - a dict with `messages` or `prompt`: that request as is.

        Args:
            data: the input.
            **params: further request fields (e.g. `max_tokens`, `temperature`).

        Returns:
            (path, body).

        Raises:
            PredictionError: the input is none of these.
        """
        body: dict[str, Any]
        if isinstance(data, str):
            path, body = COMPLETIONS_PATH, {"prompt": data}
        elif isinstance(data, list) and all(isinstance(m, dict) for m in data):
            path, body = CHAT_PATH, {"messages": data}
        elif isinstance(data, dict) and ("messages" in data or "prompt" in data):
            path = CHAT_PATH if "messages" in data else COMPLETIONS_PATH
            body = dict(data)
        else:
            raise PredictionError(
                f"Cannot send a {type(data).__name__} to an LLM.",
                deployment_name=self.deployment_name,
                hint="pass a prompt string, a list of chat messages "
                "([{'role': 'user', 'content': '...'}]) or an OpenAI request dict.",
            )
        # No `model` unless the caller names one: vLLM then answers with the model it serves,
        # so a client keeps working when an update renames the served model.
        body.update(params)
        return path, body

    def format_request(self, data: Any) -> tuple[dict[str, str], bytes]:
        """The request `predict(data)` sends to the recorded URL (chat completions), with the
        API key when the deployment has one.

        Args:
            data: messages, or an OpenAI chat request dict.

        Returns:
            (headers, body).
        """
        _, body = self.build_request(
            [{"role": "user", "content": data}] if isinstance(data, str) else data
        )
        headers = {"Content-Type": "application/json", **self._auth_headers()}
        return headers, json.dumps(body).encode()

    def predict(self, data: Any, timeout: float = 120.0, **params: Any) -> Any:
        """Sends a completion or chat completion and returns the generated text.

        Args:
            data: a prompt string, chat messages, or an OpenAI request dict.
            timeout: seconds.
            **params: request fields, e.g. `max_tokens=32, temperature=0`.

        Returns:
            The text of the first choice.
        """
        return self.complete(data, timeout=timeout, **params)["text"]

    def complete(self, data: Any, timeout: float = 120.0, **params: Any) -> dict[str, Any]:
        """Like :meth:`predict`, with the answer's details.

        Args:
            data: a prompt string, chat messages, or an OpenAI request dict.
            timeout: seconds.
            **params: request fields.

        Returns:
            {"text", "model", "finish_reason", "usage"}.

        Raises:
            PredictionError: not deployed, or the server refused the request.
        """
        if not self.base_url:
            raise PredictionError(
                f"Deployment '{self.deployment_name}' has no URL: it was never deployed.",
                deployment_name=self.deployment_name,
            )
        if params.get("stream"):
            raise PredictionError(
                "predict() returns whole answers; stream with the `openai` client "
                "against deployed_model_url (see docs/flavors/vllm.md).",
                deployment_name=self.deployment_name,
            )
        path, body = self.build_request(data, **params)
        headers = {"Content-Type": "application/json", **self._auth_headers()}
        out = self._send(self.base_url + path, headers, json.dumps(body).encode(), timeout)
        return _first_choice(out)

    def curl_example(self) -> str:
        """A chat completion request (the key as a placeholder, never its value).

        Returns:
            A curl command line.
        """
        url = self.prediction_url or "(not deployed)"
        auth = " -H 'Authorization: Bearer $VLLM_API_KEY'" if self.config.api_key else ""
        body = json.dumps(
            {
                "model": self.config.model_name_served,
                "messages": [{"role": "user", "content": "Hello!"}],
                "max_tokens": 32,
            }
        )
        return f"curl -s {url} -H 'Content-Type: application/json'{auth} -d '{body}'"

    def describe(self) -> dict[str, Any]:
        """Adds the served model name and the OpenAI base URL to the description.

        Returns:
            A JSON-able dict.
        """
        d = super().describe()
        d["served_model_name"] = self.config.model_name_served
        d["openai_base_url"] = f"{self.base_url}/v1" if self.base_url else None
        return d


def _first_choice(out: Any) -> dict[str, Any]:
    try:
        choice = out["choices"][0]
        text = choice["message"]["content"] if "message" in choice else choice["text"]
    except (KeyError, IndexError, TypeError) as e:
        raise PredictionError(
            f"Unexpected answer from the LLM server: {str(out)[:500]}",
            hint="the server does not speak the OpenAI API.",
        ) from e
    return {
        "text": text or "",
        "model": out.get("model"),
        "finish_reason": choice.get("finish_reason"),
        "usage": out.get("usage"),
    }


def resolve_local_model(model_uri: str) -> str:
    """A model reference that names an existing local path becomes absolute (the server runs
    in the deployment's directory); a Hub id is kept as is.

    Args:
        model_uri: Hub id or path.

    Returns:
        The reference to serve.

    Raises:
        ConfigurationError: empty reference.
    """
    if not model_uri.strip():
        raise ConfigurationError("The model reference is empty.", hint="pass model='org/model'.")
    expanded = os.path.expanduser(model_uri)
    return os.path.abspath(expanded) if os.path.exists(expanded) else model_uri
