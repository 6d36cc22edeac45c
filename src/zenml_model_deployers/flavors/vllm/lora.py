"""LoRA adapters of a `zmd-vllm` deployment: the server flags that serve them, and an update
that changes only adapters, done in the running server (no restart of the base model).

vLLM loads and unloads adapters at runtime through two routes of its API server
(``POST /v1/load_lora_adapter``, ``/v1/unload_lora_adapter``), open only with
``VLLM_ALLOW_RUNTIME_LORA_UPDATING``. They are called on the server's private port; the
deployment's URL refuses them (``ADMIN_PATHS``), so clients cannot load files of the host.
An adapter that changes under the same name is loaded in place (``load_inplace``): vLLM loads
the new weights before the name points at them, so no request fails; the new answers start
with the next request.
"""

from __future__ import annotations

import logging
from typing import Any

import requests

from zenml_model_deployers import secrets
from zenml_model_deployers.errors import DeploymentError
from zenml_model_deployers.flavors.vllm.config import VLLMDeploymentConfig

logger = logging.getLogger(__name__)

LOAD_PATH = "/v1/load_lora_adapter"
UNLOAD_PATH = "/v1/unload_lora_adapter"
# vLLM's routes that load or unload adapters (its own and the SageMaker-style `/adapters`).
ADMIN_PATHS = (LOAD_PATH, UNLOAD_PATH, "/adapters")


def lora_flags(config: VLLMDeploymentConfig) -> list[str]:
    """The `vllm serve` flags that serve the config's adapters.

    Args:
        config: the deployment's config.

    Returns:
        argv items (none when LoRA is off).
    """
    if not config.lora:
        return []
    argv = ["--enable-lora"]
    if config.max_lora_rank is not None:
        argv += ["--max-lora-rank", str(config.max_lora_rank)]
    if config.max_loras is not None:
        argv += ["--max-loras", str(config.max_loras)]
    if config.lora_adapters:
        argv += ["--lora-modules", *(f"{n}={p}" for n, p in config.lora_adapters.items())]
    return argv


def adapters_only_change(old: dict[str, Any] | None, new: VLLMDeploymentConfig) -> bool:
    """Whether the serving revision (its recorded config) becomes ``new`` by loading and
    unloading adapters alone: the rest of the config is the same, and the server takes
    adapters.

    Args:
        old: the serving revision's config as recorded (``status.live_config``).
        new: the config to serve.

    Returns:
        True when an in-place adapter update applies.
    """
    if not old:
        return False
    try:
        before = type(new).model_validate(old)
    except ValueError:
        return False
    if not before.lora or not new.lora:
        return False
    # Everything but the adapters the same (an empty adapter set is not hashed, so it is
    # left out of both sides rather than compared key by key).
    was, will = before.serving_fields(), new.serving_fields()
    was.pop("lora_adapters", None)
    will.pop("lora_adapters", None)
    return was == will


def apply_adapters(
    base_url: str,
    before: dict[str, str],
    after: dict[str, str],
    headers: dict[str, str],
    deployment_name: str,
    timeout: float = 120.0,
) -> None:
    """Makes the running server serve ``after`` instead of ``before``: new and changed adapters
    load first (a changed one in place), then the removed ones unload. When a load fails, what
    this call changed is undone (best effort) and the server serves ``before``.

    Args:
        base_url: the server's private base URL.
        before: the adapters it serves (name -> path).
        after: the adapters to serve.
        headers: the server's auth headers.
        deployment_name: for errors.
        timeout: seconds per call.

    Raises:
        DeploymentError: vLLM refused an adapter (its own words).
    """
    done: list[str] = []
    with requests.Session() as s:
        s.headers.update(headers)

        def call(path: str, body: dict[str, Any]) -> None:
            r = s.post(base_url + path, json=body, timeout=timeout)
            if r.status_code != 200:
                raise DeploymentError(
                    f"vLLM refused to {'load' if path == LOAD_PATH else 'unload'} the LoRA "
                    f"adapter '{body['lora_name']}' of '{deployment_name}' "
                    f"(HTTP {r.status_code}); the serving adapters are unchanged.",
                    deployment_name=deployment_name,
                    backend_message=secrets.redact(r.text[:2000]),
                    hint="check the adapter's folder (adapter_config.json and weights, a rank "
                    "no higher than max_lora_rank, modules of this base model).",
                )

        try:
            for name, path in after.items():
                if before.get(name) != path:
                    call(LOAD_PATH, _load(name, path, inplace=name in before))
                    done.append(name)
        except (DeploymentError, requests.RequestException):
            for name in done:
                try:
                    if name in before:
                        call(LOAD_PATH, _load(name, before[name], inplace=True))
                    else:
                        call(UNLOAD_PATH, {"lora_name": name})
                except (DeploymentError, requests.RequestException) as e:
                    # The first error is raised; this one is told, not lost.
                    logger.warning("Undoing the LoRA adapter '%s' failed: %s", name, e)
            raise
        for name in before.keys() - after.keys():
            call(UNLOAD_PATH, {"lora_name": name})


def _load(name: str, path: str, inplace: bool) -> dict[str, Any]:
    return {"lora_name": name, "lora_path": path, "load_inplace": inplace}
