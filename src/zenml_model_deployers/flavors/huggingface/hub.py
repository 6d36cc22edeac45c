"""Everything that calls ``huggingface_hub`` (imported here only, when a deployment acts).

Every call passes the token explicitly (``token=``); it never goes through the environment.
Errors become our typed errors, carrying Hugging Face's own message, redacted.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
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
    DeploymentTimeoutError,
    PredictionError,
)
from zenml_model_deployers.local.service import is_loopback
from zenml_model_deployers.progress import WaitProgress

if TYPE_CHECKING:
    from zenml_model_deployers.flavors.huggingface.service import (
        HuggingFaceDeploymentConfig,
        HuggingFaceDeploymentService,
    )

# A wait polls dozens of times: one INFO line per HTTP request would drown its progress line.
# Only when nobody configured the client's logger.
_http_logger = logging.getLogger("httpx2")
if _http_logger.level == logging.NOTSET:
    _http_logger.setLevel(logging.WARNING)

FIRST_POLL = 0.1
MAX_POLL = 5.0
OFFLINE_HINT = (
    "unset HF_HUB_OFFLINE (and TRANSFORMERS_OFFLINE) to deploy to Hugging Face; to run "
    "pipelines offline, use the local double: `with HFEndpointsDouble() as d, d.patch_hub(): "
    "...` (zenml_model_deployers.testing.hf_double, see docs/flavors/huggingface.md)."
)

# Client calls per task; the others get a plain JSON POST of {"inputs": ...}.
TASK_METHODS = {
    "text-classification": "text_classification",
    "sentiment-analysis": "text_classification",
    "text-generation": "text_generation",
    "feature-extraction": "feature_extraction",
    "sentence-embeddings": "feature_extraction",
    "token-classification": "token_classification",
    "fill-mask": "fill_mask",
    "summarization": "summarization",
    "translation": "translation",
    "question-answering": "question_answering",
    "zero-shot-classification": "zero_shot_classification",
    "sentence-similarity": "sentence_similarity",
    "table-question-answering": "table_question_answering",
    "image-classification": "image_classification",
    "object-detection": "object_detection",
    "automatic-speech-recognition": "automatic_speech_recognition",
    "text-to-image": "text_to_image",
}
# Tasks whose input is several named arguments: a dict input is passed as keywords.
KEYWORD_TASKS = {
    "question_answering",
    "zero_shot_classification",
    "sentence_similarity",
    "table_question_answering",
}


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
                "namespace (`zenml secret update <name> --token=...`)."
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
        "tags": ["zenml-model-deployers"],
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


def _serves(endpoint: InferenceEndpoint, expect: HuggingFaceDeploymentConfig | None) -> bool:
    if expect is None:
        return True
    if endpoint.repository != expect.model_uri:
        return False
    want = expect.revision or "main"
    return (endpoint.revision or "main") == want


def _health_ok(service: HuggingFaceDeploymentService, endpoint: InferenceEndpoint) -> bool:
    route = endpoint.raw.get("healthRoute") or service.config.health_path
    url = f"{str(endpoint.url).rstrip('/')}/{route.lstrip('/')}"
    try:
        r = get_session().request(
            service.config.health_method,
            url,
            headers=build_hf_headers(token=service._token()),
            timeout=5,
        )
    except (httpx2.HTTPError, OfflineModeIsEnabled):
        return False
    return bool(r.status_code == 200)


def _get(service: HuggingFaceDeploymentService) -> InferenceEndpoint:
    ns, name = service._where()
    with hf_errors(f"Reading Inference Endpoint '{ns}/{name}'", service.deployment_name):
        return api().get_inference_endpoint(name, namespace=ns, token=service._token())


def wait_until_running(
    service: HuggingFaceDeploymentService,
    *,
    timeout: float,
    what: str,
    expect: HuggingFaceDeploymentConfig | None,
) -> InferenceEndpoint:
    """Polls the endpoint until it runs what is expected and its health route answers.

    Polls quickly at first, then every few seconds; shows progress; never longer than
    ``timeout``.

    Args:
        service: the deployment (its status names the endpoint).
        timeout: seconds.
        what: what is waited for, for messages (e.g. "update to org/model@abc").
        expect: the config the endpoint must serve (None: whatever it was asked to).

    Returns:
        The running endpoint.

    Raises:
        DeploymentError: Hugging Face reports ``failed`` / ``updateFailed`` (with its message),
            or the endpoint was paused meanwhile.
        DeploymentTimeoutError: it did not run in time.
    """
    ns, name = service._where()
    start = time.monotonic()
    deadline = start + timeout
    delay = FIRST_POLL
    last = ""
    progress = WaitProgress(f"Waiting for Inference Endpoint '{ns}/{name}' ({what})")
    try:
        while True:
            endpoint = _get(service)
            state = str(endpoint.status)
            raw_status = endpoint.raw.get("status", {})
            message = str(raw_status.get("message") or raw_status.get("errorMessage") or "")
            last = f"{state}: {message}" if message else state
            if state in ("failed", "updateFailed"):
                raise DeploymentError(
                    f"Inference Endpoint '{ns}/{name}' ({what}): Hugging Face reports '{state}'.",
                    deployment_name=service.deployment_name,
                    backend_message=message or state,
                    hint="fix the cause above (repository, revision, task, framework, "
                    "instance); the container's logs are in the Hugging Face UI.",
                )
            if state == "paused":
                raise DeploymentError(
                    f"Inference Endpoint '{ns}/{name}' was paused while waiting ({what}).",
                    deployment_name=service.deployment_name,
                    backend_message=last,
                    hint=f"`zmd models start {service.deployment_name}` resumes it.",
                )
            if state == "running" and endpoint.url and _serves(endpoint, expect):
                if _health_ok(service, endpoint):
                    return endpoint
                last = "running, but its health route does not answer yet"
            now = time.monotonic()
            if now >= deadline:
                raise DeploymentTimeoutError(
                    f"Inference Endpoint '{ns}/{name}' was not running after {timeout:.0f} s "
                    f"({what}).",
                    deployment_name=service.deployment_name,
                    backend_message=f"last state: {last}",
                    hint="raise the step's `timeout` (or the component's default_timeout): "
                    "endpoints on GPUs can take 10+ minutes to start.",
                )
            progress.tick(now - start, state)
            time.sleep(min(delay, max(deadline - now, 0.0)))
            delay = min(delay * 1.5, MAX_POLL)
    finally:
        progress.done()


def wait_for_state(
    service: HuggingFaceDeploymentService, state: str, timeout: float
) -> InferenceEndpoint:
    """Polls until Hugging Face reports ``state`` (e.g. ``paused``), bounded by ``timeout``.

    Args:
        service: the deployment.
        state: the state to reach.
        timeout: seconds.

    Returns:
        The endpoint.

    Raises:
        DeploymentTimeoutError: not reached in time.
    """
    deadline = time.monotonic() + timeout
    delay = FIRST_POLL
    while True:
        endpoint = _get(service)
        if str(endpoint.status) == state:
            return endpoint
        if time.monotonic() >= deadline:
            raise DeploymentTimeoutError(
                f"Inference Endpoint '{service.endpoint_label}' is not {state} after "
                f"{timeout:.0f} s (it is {endpoint.status}).",
                deployment_name=service.deployment_name,
            )
        time.sleep(delay)
        delay = min(delay * 1.5, MAX_POLL)


def wait_until_gone(service: HuggingFaceDeploymentService, timeout: float) -> bool:
    """Polls until a deleted endpoint is gone (Hugging Face deletes asynchronously), so that
    an endpoint of the same name can be created right after (policy ``replace``).

    Args:
        service: the deployment (its status still names the endpoint).
        timeout: seconds.

    Returns:
        True if it is gone, False if it still exists after ``timeout``.
    """
    deadline = time.monotonic() + timeout
    delay = FIRST_POLL
    while True:
        try:
            _get(service)
        except EndpointsAPIError as e:
            if e.status_code == 404:
                return True
            raise
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 1.5, MAX_POLL)


# --------------------------------------------------------------------------- predictions
def to_plain(value: Any) -> Any:
    """Turns client outputs (dataclass-dicts, numpy arrays) into plain Python data.

    Args:
        value: what a client call returned.

    Returns:
        Lists, dicts, strings and numbers (bytes and images pass through).
    """
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_plain(v) for v in value]
    return value


def _items(data: Any) -> tuple[list[Any], bool]:
    """(inputs, whether it is a batch)."""
    if hasattr(data, "columns") and hasattr(data, "to_dict"):
        if len(data.columns) == 1:
            return list(data.iloc[:, 0]), True
        return list(data.to_dict(orient="records")), True
    if hasattr(data, "tolist") and not isinstance(data, bytes | str):
        data = data.tolist()
    if isinstance(data, list | tuple):
        return list(data), True
    return [data], False


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
    method = TASK_METHODS.get(task or "")
    if method is None or (isinstance(item, dict) and "inputs" in item):
        payload = (
            item
            if isinstance(item, dict) and "inputs" in item
            else {"inputs": item, **({"parameters": parameters} if parameters else {})}
        )
        return _post(url, token, payload, timeout)
    fn = getattr(client, method)
    if isinstance(item, dict) and method in KEYWORD_TASKS:
        return fn(**item, **parameters)
    return fn(item, **parameters)


def predict(
    service: HuggingFaceDeploymentService,
    data: Any,
    *,
    timeout: float,
    parameters: dict[str, Any],
) -> Any:
    """See ``HuggingFaceDeploymentService.predict``.

    Args:
        service: the deployment.
        data: one input or a batch.
        timeout: seconds for the whole call.
        parameters: task parameters.

    Returns:
        Plain Python data.

    Raises:
        PredictionError: the endpoint answered an error.
    """
    url = str(service.status.url)
    token = service._token()
    if service._client is None or service._client.model != url:
        service._client = InferenceClient(model=url, token=token)
    client: InferenceClient = service._client
    client.timeout = timeout
    deadline = time.monotonic() + timeout
    items, batch = _items(data)
    out = []
    for item in items:
        delay = 0.2
        while True:
            try:
                out.append(
                    to_plain(
                        _call(client, url, token, service.config.task, item, timeout, parameters)
                    )
                )
                break
            except HfHubHTTPError as e:
                code = e.response.status_code
                if code == 503 and time.monotonic() + delay < deadline:
                    if service.endpoint_is_waking():
                        time.sleep(delay)  # cold start: retry within the caller's timeout
                        delay = min(delay * 1.5, MAX_POLL)
                        continue
                raise PredictionError(
                    f"Deployment '{service.deployment_name}' answered HTTP {code}.",
                    deployment_name=service.deployment_name,
                    backend_message=secrets.redact(
                        e.server_message or e.response.text[:4000] or str(e)
                    ),
                    hint="check the input format the task expects"
                    if code < 500
                    else f"check it serves: `zmd models describe {service.deployment_name}`.",
                ) from e
            except (InferenceTimeoutError, httpx2.HTTPError, OfflineModeIsEnabled) as e:
                raise PredictionError(
                    f"Prediction request to {url} failed: {type(e).__name__}: {e}",
                    deployment_name=service.deployment_name,
                    hint=f"check it serves: `zmd models describe {service.deployment_name}`.",
                ) from e
    return out if batch else out[0]
