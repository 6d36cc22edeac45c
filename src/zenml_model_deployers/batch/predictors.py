"""What turns a batch of rows into predictions: a deployed service, or the model in-process.

Both take a ``pyarrow.Table`` of input rows and return one prediction per row. The remote one
retries transient failures (connection reset or refused, HTTP 429 and 503, honouring the
backend's ``Retry-After``) with capped exponential backoff; anything else fails at once.
Both pickle (Ray ships them to its workers).
"""

from __future__ import annotations

import random
import threading
import time
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from zenml_model_deployers.errors import ConfigurationError, PredictionError, is_interruption

if TYPE_CHECKING:
    from zenml_model_deployers.service import DeploymentService

TRANSIENT_STATUS = frozenset({429, 503})

# MLflow's scoring server takes a DataFrame as a Parquet body (MLflow 3): the batch's Arrow table
# is written as is (no JSON: a tenth of the client's and the server's CPU per row, and exact
# values: pandas' JSON keeps 10 significant digits). A server that answers 415 gets JSON.
PARQUET_CONTENT_TYPE = "application/vnd.apache.parquet"


class RetryPolicy(BaseModel):
    """Retries of transient failures.

    Attributes:
        attempts: tries per batch in all (1: no retry).
        backoff: seconds before the first retry; doubled at each next one.
        max_backoff: the longest wait between tries.
    """

    attempts: int = 5
    backoff: float = 0.2
    max_backoff: float = 10.0

    def delay(self, attempt: int, error: BaseException) -> float:
        """Seconds to wait before try ``attempt + 1``.

        Args:
            attempt: tries made so far (1-based).
            error: the last failure (its ``retry_after`` is honoured, within ``max_backoff``).

        Returns:
            Seconds.
        """
        asked = getattr(error, "retry_after", None)
        if asked is not None:
            return float(min(asked, self.max_backoff))
        base = min(self.backoff * 2 ** (attempt - 1), self.max_backoff)
        return float(base * (0.5 + random.random() / 2))  # jitter: clients do not retry in step


def is_transient(error: BaseException) -> bool:
    """Tells whether a failure is worth retrying: the request never reached the model, or the
    backend said "not now" (429 Too Many Requests, 503 Service Unavailable).

    Args:
        error: the failure.

    Returns:
        True for connection resets/refusals and 429/503.
    """
    import requests

    if getattr(error, "status_code", None) in TRANSIENT_STATUS:
        return True
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, requests.ConnectionError | ConnectionError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def to_model_input(table: Any, is_array: bool) -> Any:
    """A table of rows as the model takes it: a DataFrame, or an array for array inputs.

    Args:
        table: a ``pyarrow.Table``.
        is_array: the input was an array (one ``input`` column of rows).

    Returns:
        A DataFrame or numpy array.
    """
    if is_array:
        import numpy as np

        from zenml_model_deployers.batch.sources import ARRAY_COLUMN

        return np.array(table.column(ARRAY_COLUMN).to_pylist())
    # Arrow's default conversion: columns of one dtype in one 2-d block, which the model's input
    # check (e.g. sklearn's) takes as one array. Measured on 4 float columns: conversion plus a
    # logistic regression's predict took 0.65x the time of `split_blocks=True` (one block per
    # column, zero-copy, but copied again into one array by the model).
    return table.to_pandas()


class RemotePredictor:
    """Predictions from a deployed service, with retries of transient failures.

    Attributes:
        service: the deployment.
        timeout: seconds per request.
        retry: the retry policy.
        is_array: send arrays rather than DataFrames.
        retries: retries made so far (all threads).
    """

    def __init__(
        self, service: DeploymentService, timeout: float, retry: RetryPolicy, is_array: bool
    ) -> None:
        """Wraps the service.

        Args:
            service: the deployment.
            timeout: seconds per request.
            retry: the retry policy.
            is_array: send arrays rather than DataFrames.
        """
        self.service = service
        self.timeout = timeout
        self.retry = retry
        self.is_array = is_array
        self.retries = 0
        self._lock = threading.Lock()
        self.parquet = not is_array and _takes_parquet(service)

    def __getstate__(self) -> dict[str, Any]:
        # The service travels as its class path and JSON (secrets stay references, resolved
        # where a request is sent); its HTTP session and locks are made anew there.
        state = self.__dict__.copy()
        del state["_lock"]
        svc = state.pop("service")
        state["_service_doc"] = (
            f"{type(svc).__module__}.{type(svc).__qualname__}",
            svc.model_dump(mode="json"),
        )
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        from zenml_model_deployers.service import load_service_class

        source, doc = state.pop("_service_doc")
        self.__dict__.update(state)
        self.service = load_service_class(source).model_validate(doc)
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        """The deployment and its revision (what a commit record names)."""
        revision = self.service.status.config_hash or "?"
        return f"deployment {self.service.deployment_name} ({revision[:12]})"

    def predict(self, table: Any) -> Any:
        """Predicts a batch; retries transient failures.

        Args:
            table: the rows (``pyarrow.Table``).

        Returns:
            One prediction per row.

        Raises:
            PredictionError: a non-transient failure, or a transient one that outlasted
                every attempt (the backend's words; ``attempts`` says how many).
        """
        attempt = 1
        while True:
            try:
                out = self._request(table)
                break
            except PredictionError as e:
                if e.status_code == 415 and self.parquet:
                    self.parquet = False  # an MLflow older than Parquet bodies: JSON from now on
                    continue
                if attempt >= self.retry.attempts or not is_transient(e):
                    e.attempts = attempt  # type: ignore[attr-defined]
                    raise
                time.sleep(self.retry.delay(attempt, e))
                attempt += 1
                with self._lock:
                    self.retries += 1
        return _check_count(out, table.num_rows, self.service.deployment_name)

    def _request(self, table: Any) -> Any:
        """One request: the table as a Parquet body, or what the flavor's ``format_request``
        makes of it."""
        if not self.parquet:
            return self.service.predict(to_model_input(table, self.is_array), timeout=self.timeout)
        import pyarrow as pa
        import pyarrow.parquet as pq

        url = self.service.prediction_url
        if not url:  # predict() raises its "never deployed" error
            return self.service.predict(table.to_pandas(), timeout=self.timeout)
        from zenml_model_deployers.batch.sinks import dictionary_columns

        sink = pa.BufferOutputStream()
        pq.write_table(
            table, sink, compression="none", use_dictionary=dictionary_columns(table.schema)
        )
        body = sink.getvalue().to_pybytes()
        return self.service._send(url, {"Content-Type": PARQUET_CONTENT_TYPE}, body, self.timeout)


def _takes_parquet(service: DeploymentService) -> bool:
    """Whether the service is MLflow's scoring server (Parquet bodies, MLflow 3): a subclass
    that formats its own requests is left to its ``format_request``."""
    from zenml_model_deployers.flavors.mlflow.service import MLflowDeploymentService

    return (
        isinstance(service, MLflowDeploymentService)
        and type(service).format_request is MLflowDeploymentService.format_request
    )


class LocalPredictor:
    """The model loaded in this process (MLflow pyfunc): no server, same predictions.

    Attributes:
        model_uri: the MLflow model URI.
        is_array: the input is an array.
        retries: always 0 (nothing to retry in-process).
    """

    def __init__(self, model_uri: str, is_array: bool) -> None:
        """Names the model (loaded on first use, once per process).

        Args:
            model_uri: any MLflow model URI.
            is_array: the input is an array.
        """
        self.model_uri = model_uri
        self.is_array = is_array
        self.retries = 0
        self._model: Any = None
        self._loading: threading.Thread | None = None
        self._load_error: BaseException | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_model": None, "_loading": None, "_load_error": None}

    def preload(self) -> None:
        """Starts loading the model in a background thread: the job reads its first chunks
        meanwhile (loading is mostly Python, reading mostly Arrow, which releases the GIL).
        ``load`` waits for it."""
        if self._model is not None or self._loading is not None:
            return

        def load() -> None:
            try:
                self._model = self._load_now()
            except BaseException as e:  # raised by load(), in the job's thread
                self._load_error = e

        self._loading = threading.Thread(target=load, name="zmd-model-load", daemon=True)
        self._loading.start()

    @property
    def name(self) -> str:
        """The local model (what a commit record names)."""
        return f"local model {self.model_uri}"

    def load(self) -> Any:
        """Loads the model (once).

        Returns:
            The MLflow pyfunc model.

        Raises:
            ConfigurationError: MLflow cannot load it (its message).
        """
        if self._loading is not None:
            self._loading.join()
            self._loading = None
        if self._load_error is not None:
            error, self._load_error = self._load_error, None
            raise error
        if self._model is None:
            self._model = self._load_now()
        return self._model

    def _load_now(self) -> Any:
        import mlflow.pyfunc

        try:
            return mlflow.pyfunc.load_model(self.model_uri)
        except Exception as e:
            raise ConfigurationError(
                f"Could not load the model '{self.model_uri}' in-process (local=True).",
                backend_message=str(e),
                hint="check the model URI, and that this environment has the model's dependencies.",
            ) from e

    def predict(self, table: Any) -> Any:
        """Predicts a batch in-process.

        Args:
            table: the rows (``pyarrow.Table``).

        Returns:
            One prediction per row (a list, or a 1-d numpy array).

        Raises:
            PredictionError: the model raised (its message).
        """
        model = self.load()
        try:
            out = model.predict(to_model_input(table, self.is_array))
        except Exception as e:
            if is_interruption(e):
                raise  # Ctrl-C in a ZenML step: not the model's failure
            raise PredictionError(
                f"The local model '{self.model_uri}' failed to predict.",
                backend_message=f"{type(e).__name__}: {e}",
                hint="check the input columns the model expects.",
            ) from e
        if hasattr(out, "to_numpy"):  # a Series or one-column DataFrame
            out = out.to_numpy()
            out = out.ravel() if out.ndim == 2 and out.shape[1] == 1 else out
        # A 1-d array stays an array: Arrow takes it without a Python list per row.
        return _check_count(out, table.num_rows, self.model_uri)


def _check_count(out: Any, rows: int, name: str) -> Any:
    preds = out if isinstance(out, list) or getattr(out, "ndim", 0) == 1 else list(out)
    if len(preds) != rows:
        raise PredictionError(
            f"{rows} rows sent to '{name}', {len(preds)} predictions back.",
            hint="the model must return one prediction per input row.",
        )
    return preds


def local_model_uri(service: DeploymentService | None, model_uri: str | None) -> str:
    """The model to load in-process: ``model_uri``, else the one the service serves.

    Args:
        service: the deployment, if any.
        model_uri: an explicit MLflow model URI, if any.

    Returns:
        The model URI.

    Raises:
        ConfigurationError: neither names an MLflow model.
    """
    if model_uri:
        return model_uri
    served = getattr(getattr(service, "config", None), "model_uri", None)
    if isinstance(served, str) and served:
        return served
    raise ConfigurationError(
        "local=True needs an MLflow model: the service does not serve one by URI.",
        hint="pass model_uri= (any MLflow model URI).",
    )
