"""Everything that calls ``huggingface_hub`` (imported here only, when a deployment acts).

The service (service.py) decides *what* to do; this module makes the calls: the Inference
Endpoints API (:class:`EndpointHandle`), the health route, and predictions through
``InferenceClient``. Every call passes the token explicitly (``token=``); it never goes through
the environment. Errors become our typed errors, carrying Hugging Face's own message, redacted.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import httpx2
from huggingface_hub import (
    HfApi,
    InferenceClient,
    InferenceEndpoint,
    constants,
    get_session,
    hf_raise_for_status,
)
from huggingface_hub.errors import HfHubHTTPError, InferenceTimeoutError, OfflineModeIsEnabled
from huggingface_hub.utils._headers import build_hf_headers

from zenml_model_deployers import secrets
from zenml_model_deployers.errors import (
    ConfigurationError,
    DeploymentError,
    DeploymentExistsError,
    PredictionError,
)
from zenml_model_deployers.flavors.huggingface import protocol
from zenml_model_deployers.local.service import is_loopback

if TYPE_CHECKING:
    from zenml_model_deployers.flavors.huggingface.config import HuggingFaceDeploymentConfig

# A wait polls dozens of times: one INFO line per HTTP request would drown its progress line.
# Only when nobody configured the client's logger.
_http_logger = logging.getLogger("httpx2")
if _http_logger.level == logging.NOTSET:
    _http_logger.setLevel(logging.WARNING)

MAX_POLL = 5.0
TAG = "zenml-model-deployers"
OFFLINE_HINT = (
    "unset HF_HUB_OFFLINE (and TRANSFORMERS_OFFLINE) to deploy to Hugging Face; to run "
    "pipelines offline, use the local double: `with HFEndpointsDouble() as d, d.patch_hub(): "
    "...` (zenml_model_deployers.testing.hf_double, see docs/flavors/huggingface.md)."
)


class EndpointsAPIError(DeploymentError):
    """The Inference Endpoints API answered an error.

    Attributes:
        status_code: its HTTP status (None when it could not be reached).
    """

    def __init__(self, message: str, *, status_code: int | None = None, **kwargs: Any) -> None:
        """Builds the error.

        Args:
            message: what failed.
            status_code: the HTTP status.
            **kwargs: see DeploymentError.
        """
        super().__init__(message, **kwargs)
        self.status_code = status_code


class EndpointsRequestRejected(EndpointsAPIError, ConfigurationError):
    """The API refused the request as invalid (HTTP 400/422): nothing changed."""


def api() -> HfApi:
    """A client for the Hub (``constants.ENDPOINT`` as it is now, e.g. patched by the double).

    Returns:
        An ``HfApi`` without a token of its own: every call passes ``token=``.
    """
    return HfApi(endpoint=constants.ENDPOINT)


def _is_loopback(url: str) -> bool:
    return is_loopback(urlparse(url).hostname or "")


def offline_blocks_api() -> bool:
    """Tells whether offline mode forbids reaching the Inference Endpoints API in use.

    ``huggingface_hub`` refuses every request in offline mode; a local double on a loopback
    address is not Hugging Face, so it is left to the client (the double's ``patch_hub`` lets
    requests to it through).

    Returns:
        True when HF_HUB_OFFLINE is on and the API is not on this machine.
    """
    return bool(constants.is_offline_mode()) and not _is_loopback(
        constants.INFERENCE_ENDPOINTS_ENDPOINT
    )


def check_offline() -> None:
    """Raises before any call when offline mode forbids it.

    Raises:
        ConfigurationError: HF_HUB_OFFLINE is on and the API is Hugging Face's.
    """
    if offline_blocks_api():
        raise ConfigurationError(
            "HF_HUB_OFFLINE is set: huggingface_hub may not reach Inference Endpoints at "
            f"{constants.INFERENCE_ENDPOINTS_ENDPOINT}, so nothing was deployed or changed.",
            hint=OFFLINE_HINT,
        )


@contextlib.contextmanager
def hf_errors(what: str, deployment_name: str) -> Iterator[None]:
    """Turns ``huggingface_hub`` failures into typed errors with Hugging Face's message.

    Args:
        what: the operation, e.g. "Creating Inference Endpoint 'me/iris'".
        deployment_name: the deployment concerned.

    Yields:
        Nothing.

    Raises:
        ConfigurationError: offline mode, or the API rejected the request as invalid.
        EndpointsAPIError: any other API failure (``status_code`` says which).
    """
    try:
        yield
    except DeploymentError:
        raise
    except OfflineModeIsEnabled as e:
        raise ConfigurationError(
            f"{what} failed: huggingface_hub is in offline mode (HF_HUB_OFFLINE).",
            deployment_name=deployment_name,
            backend_message=str(e),
            hint=OFFLINE_HINT,
        ) from e
    except HfHubHTTPError as e:
        code = e.response.status_code
        body = e.server_message or e.response.text[:2000] or str(e)
        hint = None
        if code in (401, 403):
            hint = (
                "the token was refused: check that the secret the component's `token` "
                "references holds a token with write access to Inference Endpoints in this "
                "namespace (`zenml secret update <name> -i`, key `token`)."
            )
        cls = EndpointsRequestRejected if code in (400, 422) else EndpointsAPIError
        raise cls(
            f"{what} failed: HTTP {code}.",
            status_code=code,
            deployment_name=deployment_name,
            backend_message=body,
            hint=hint,
        ) from e
    except httpx2.HTTPError as e:
        raise EndpointsAPIError(
            f"{what} failed: cannot reach {constants.INFERENCE_ENDPOINTS_ENDPOINT}: "
            f"{type(e).__name__}: {e}",
            deployment_name=deployment_name,
            hint="check the network (and HF_ENDPOINT / proxies), then deploy again.",
        ) from e


def token_namespace(token: str, deployment_name: str) -> str:
    """The token user's namespace (``whoami``), for components that name none.

    Args:
        token: the token.
        deployment_name: for messages.

    Returns:
        The user name.
    """
    with hf_errors("Asking Hugging Face who the token belongs to", deployment_name):
        return str(api().whoami(token=token)["name"])


def create_kwargs(cfg: HuggingFaceDeploymentConfig) -> dict[str, Any]:
    """The arguments of ``create_inference_endpoint`` for a config (secrets resolved).

    Args:
        cfg: the config.

    Returns:
        Keyword arguments (contain secret values: never log them).
    """
    kwargs: dict[str, Any] = {
        "repository": cfg.model_uri,
        "framework": cfg.framework,
        "accelerator": cfg.accelerator,
        "instance_size": cfg.instance_size,
        "instance_type": cfg.instance_type,
        "region": cfg.region,
        "vendor": cfg.vendor,
        "min_replica": cfg.min_replica,
        "max_replica": cfg.max_replica,
        "scale_to_zero_timeout": cfg.scale_to_zero_timeout,
        "revision": cfg.revision,
        "task": cfg.task,
        "custom_image": cfg.custom_image,
        "type": cfg.endpoint_type,
        "tags": [TAG],
    }
    if cfg.plain_env():
        kwargs["env"] = cfg.plain_env()
    resolved = cfg.resolved_secrets()
    if resolved:
        kwargs["secrets"] = resolved
    return kwargs


def update_kwargs(
    cfg: HuggingFaceDeploymentConfig, previous: HuggingFaceDeploymentConfig | None
) -> dict[str, Any]:
    """The arguments of ``update_inference_endpoint`` that make the endpoint serve ``cfg``.

    Args:
        cfg: the config to serve.
        previous: the config it serves now (settings it had and ``cfg`` leaves unset are
            reset where the API allows it).

    Returns:
        Keyword arguments (contain secret values: never log them).
    """
    revision = cfg.revision
    if revision is None and previous is not None and previous.revision is not None:
        revision = "main"  # "no revision" is the default branch; None would keep the old one
    return {
        "repository": cfg.model_uri,
        "framework": cfg.framework,
        "revision": revision,
        "task": cfg.task,
        "accelerator": cfg.accelerator,
        "instance_size": cfg.instance_size,
        "instance_type": cfg.instance_type,
        "min_replica": cfg.min_replica,
        "max_replica": cfg.max_replica,
        "scale_to_zero_timeout": cfg.scale_to_zero_timeout,
        "custom_image": cfg.custom_image,
        "env": cfg.plain_env(),
        "secrets": cfg.resolved_secrets(),
    }


def status_code(error: BaseException) -> int | None:
    """The HTTP status of an Inference Endpoints API error (None for other errors).

    Args:
        error: an exception.

    Returns:
        The status.
    """
    code = getattr(error, "status_code", None)
    return code if isinstance(code, int) else None


@dataclass(frozen=True)
class EndpointHandle:
    """One deployment's Inference Endpoint: every API call about it, errors mapped.

    Attributes:
        namespace: the endpoint's namespace.
        name: its name.
        token: the token (a resolved value: never log this object).
        deployment_name: the deployment, for errors.
    """

    namespace: str
    name: str
    token: str
    deployment_name: str

    @property
    def label(self) -> str:
        """``namespace/name``."""
        return f"{self.namespace}/{self.name}"

    def _errors(self, what: str) -> contextlib.AbstractContextManager[None]:
        return hf_errors(f"{what} Inference Endpoint '{self.label}'", self.deployment_name)

    def get(self) -> InferenceEndpoint:
        """Reads the endpoint.

        Returns:
            It, as Hugging Face reports it.
        """
        with self._errors("Reading"):
            return api().get_inference_endpoint(
                self.name, namespace=self.namespace, token=self.token
            )

    def find(self) -> InferenceEndpoint | None:
        """Reads the endpoint; None when it does not exist (e.g. deleted outside zmd).

        Returns:
            It, or None.
        """
        try:
            return self.get()
        except EndpointsAPIError as e:
            if e.status_code != 404:
                raise
        return None

    def create(self, cfg: HuggingFaceDeploymentConfig) -> InferenceEndpoint:
        """Creates the endpoint serving ``cfg``.

        Args:
            cfg: the revision.

        Returns:
            The new endpoint.

        Raises:
            DeploymentExistsError: an endpoint of that name exists (never adopted).
        """
        try:
            with self._errors("Creating"):
                return api().create_inference_endpoint(
                    self.name, namespace=self.namespace, token=self.token, **create_kwargs(cfg)
                )
        except EndpointsAPIError as e:
            if e.status_code != 409:
                raise
            raise DeploymentExistsError(
                f"An Inference Endpoint '{self.label}' already exists, and no zmd deployment "
                "records it (made by hand, or left by an interrupted deploy).",
                deployment_name=self.deployment_name,
                backend_message=e.backend_message,
                hint=f"delete it in the Hugging Face UI (or `hf endpoints delete {self.name} "
                f"--namespace {self.namespace}`) if it is yours to remove, or deploy under "
                "another deployment_name.",
            ) from e

    def update(
        self, cfg: HuggingFaceDeploymentConfig, previous: HuggingFaceDeploymentConfig | None
    ) -> InferenceEndpoint:
        """Makes the endpoint serve ``cfg`` (in place: same URL).

        Args:
            cfg: the revision to serve.
            previous: the one it serves now (see :func:`update_kwargs`).

        Returns:
            The endpoint.
        """
        with self._errors("Updating"):
            return api().update_inference_endpoint(
                self.name,
                namespace=self.namespace,
                token=self.token,
                **update_kwargs(cfg, previous),
            )

    def resume(self) -> InferenceEndpoint:
        """Resumes a paused (or failed) endpoint.

        Returns:
            The endpoint.
        """
        with self._errors("Resuming"):
            return api().resume_inference_endpoint(
                self.name, namespace=self.namespace, token=self.token
            )

    def pause(self) -> InferenceEndpoint | None:
        """Pauses the endpoint (no cost; same URL after resume).

        Returns:
            The endpoint, or None when it does not exist.
        """
        try:
            with self._errors("Pausing"):
                return api().pause_inference_endpoint(
                    self.name, namespace=self.namespace, token=self.token
                )
        except EndpointsAPIError as e:
            if e.status_code != 404:
                raise
        return None

    def delete(self) -> None:
        """Deletes the endpoint (Hugging Face deletes asynchronously); a missing one is fine."""
        try:
            with self._errors("Deleting"):
                api().delete_inference_endpoint(
                    self.name, namespace=self.namespace, token=self.token
                )
        except EndpointsAPIError as e:
            if e.status_code != 404:
                raise


def endpoint_message(endpoint: InferenceEndpoint) -> str:
    """Hugging Face's message about an endpoint's state (its error message on failure).

    Args:
        endpoint: the endpoint.

    Returns:
        The message ("" when none).
    """
    raw_status = endpoint.raw.get("status", {})
    return str(raw_status.get("message") or raw_status.get("errorMessage") or "")


def configured_for(endpoint: InferenceEndpoint, cfg: HuggingFaceDeploymentConfig) -> bool:
    """Tells whether the endpoint is set to serve ``cfg``'s repository and revision.

    Args:
        endpoint: the endpoint.
        cfg: the revision.

    Returns:
        True when they match ("no revision" is the default branch, ``main``).
    """
    if endpoint.repository != cfg.model_uri:
        return False
    return (endpoint.revision or "main") == (cfg.revision or "main")


def health_ok(endpoint: InferenceEndpoint, token: str, method: str, default_route: str) -> bool:
    """Tells whether the endpoint's health route answers 200.

    Args:
        endpoint: a running endpoint (with a URL).
        token: the token.
        method: the HTTP method.
        default_route: the route when the endpoint names none.

    Returns:
        True when it answers.
    """
    route = endpoint.raw.get("healthRoute") or default_route
    url = f"{str(endpoint.url).rstrip('/')}/{route.lstrip('/')}"
    try:
        r = get_session().request(method, url, headers=build_hf_headers(token=token), timeout=5)
    except (httpx2.HTTPError, OfflineModeIsEnabled):
        return False
    return bool(r.status_code == 200)


# --------------------------------------------------------------------------- predictions
def _post(url: str, token: str, payload: Any, timeout: float) -> Any:
    r = get_session().post(
        url, json=payload, headers=build_hf_headers(token=token), timeout=timeout
    )
    hf_raise_for_status(r)
    try:
        return r.json()
    except ValueError:
        return r.content


def _call(
    client: InferenceClient,
    url: str,
    token: str,
    task: str | None,
    item: Any,
    timeout: float,
    parameters: dict[str, Any],
) -> Any:
    method = protocol.TASK_METHODS.get(task or "")
    if method is None or (isinstance(item, dict) and "inputs" in item):
        payload = (
            item
            if isinstance(item, dict) and "inputs" in item
            else {"inputs": item, **({"parameters": parameters} if parameters else {})}
        )
        return _post(url, token, payload, timeout)
    fn = getattr(client, method)
    if isinstance(item, dict) and method in protocol.KEYWORD_TASKS:
        return fn(**item, **parameters)
    return fn(item, **parameters)


def inference_client(url: str, token: str) -> InferenceClient:
    """A client for an endpoint's URL (keep it for the next predictions).

    Args:
        url: the endpoint's URL.
        token: the token.

    Returns:
        The client.
    """
    return InferenceClient(model=url, token=token)


def predict(
    client: InferenceClient,
    data: Any,
    *,
    token: str,
    task: str | None,
    timeout: float,
    parameters: dict[str, Any],
    deployment_name: str,
    is_waking: Callable[[], bool],
) -> Any:
    """See ``HuggingFaceDeploymentService.predict``.

    Args:
        client: the endpoint's client (its ``model`` is the URL).
        data: one input or a batch.
        token: the token.
        task: the endpoint's task (picks the client call).
        timeout: seconds for the whole call.
        parameters: task parameters.
        deployment_name: for errors.
        is_waking: tells whether the endpoint is waking up (a 503 is then retried).

    Returns:
        Plain Python data.

    Raises:
        PredictionError: the endpoint answered an error.
    """
    url = str(client.model)
    client.timeout = timeout
    deadline = time.monotonic() + timeout
    items, batch = protocol.batch_items(data)
    out = []
    for item in items:
        delay = 0.2
        while True:
            try:
                out.append(
                    protocol.to_plain(_call(client, url, token, task, item, timeout, parameters))
                )
                break
            except HfHubHTTPError as e:
                code = e.response.status_code
                if code == 503 and time.monotonic() + delay < deadline and is_waking():
                    time.sleep(delay)  # cold start: retry within the caller's timeout
                    delay = min(delay * 1.5, MAX_POLL)
                    continue
                raise PredictionError(
                    f"Deployment '{deployment_name}' answered HTTP {code}.",
                    deployment_name=deployment_name,
                    backend_message=secrets.redact(
                        e.server_message or e.response.text[:4000] or str(e)
                    ),
                    hint="check the input format the task expects"
                    if code < 500
                    else f"check it serves: `zmd models describe {deployment_name}`.",
                ) from e
            except (InferenceTimeoutError, httpx2.HTTPError, OfflineModeIsEnabled) as e:
                raise PredictionError(
                    f"Prediction request to {url} failed: {type(e).__name__}: {e}",
                    deployment_name=deployment_name,
                    hint=f"check it serves: `zmd models describe {deployment_name}`.",
                ) from e
    return out if batch else out[0]
