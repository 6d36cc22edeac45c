"""A model served by MLflow's scoring server (what `mlflow models serve --env-manager local` runs)
behind the deployment's relay."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from zenml.models.v2.misc.service import ServiceType

from zenml_model_deployers.flavors.mlflow import serve

# The config moved to config.py; ZenML recorded its source path here, so it stays importable.
from zenml_model_deployers.flavors.mlflow.config import (
    MLflowDeploymentConfig as MLflowDeploymentConfig,
)
from zenml_model_deployers.flavors.mlflow.flavor import FLAVOR_NAME
from zenml_model_deployers.flavors.mlflow.serve import is_local
from zenml_model_deployers.local.process import python_executable
from zenml_model_deployers.local.service import LocalProcessService
from zenml_model_deployers.service import serving_type

# A deployment's resolved revisions: <deployment dir>/revisions/<config hash>/ (see serve.py).
REVISIONS_DIR = "revisions"


class MLflowDeploymentService(LocalProcessService):
    """An MLflow model server process behind a stable URL."""

    SERVICE_TYPE: ClassVar[ServiceType] = serving_type(
        FLAVOR_NAME, "MLflow model served locally by zenml-model-deployers"
    )
    FLAVOR: ClassVar[str] = FLAVOR_NAME
    PREDICT_PATH: ClassVar[str] = "/invocations"
    # A restart keeps MLflow's own settings (tracking URI, file store) from the deploying process.
    RESTART_INHERITED_ENV: ClassVar[tuple[str, ...]] = serve.RESTART_INHERITED_ENV
    SUPPORTS_DIRECT_DATA_PATH: ClassVar[bool] = True
    # MLflow's scoring server reaches most of its best rate there (bench/bench_batch.py) while
    # a tabular request stays well under common body limits (docs/batch.md).
    BATCH_SIZE: ClassVar[int] = 8192

    config: MLflowDeploymentConfig

    def server_command(self, port: int) -> list[str]:
        """MLflow's scoring server, as `mlflow models serve --env-manager local` runs it, without
        the wrapper process that stays alive as its idle parent (see ``serve.py``).

        The model is resolved once per revision into ``revisions/<config hash>/`` of the
        deployment's folder; the command (uvicorn serving ``mlflow.pyfunc.scoring_server.app``
        with these workers and request timeout: routes /ping, /health, /version,
        /invocations) is MLflow's ``scoring_server.get_cmd``. A restart by the front and
        ``zmd models start`` reuse the resolved files: no registry access.

        Args:
            port: private port.

        Returns:
            argv.
        """
        uri = self.config.model_uri
        return [
            python_executable(),
            "-m",
            "zenml_model_deployers.flavors.mlflow.serve",
            "--model-uri",
            # The server runs in the deployment's folder: a relative path means the caller's.
            os.path.abspath(uri) if is_local(uri) and "://" not in uri else uri,
            "--revision-dir",
            str(self.workdir / REVISIONS_DIR / self.config.config_hash()),
            "--port",
            str(port),
            "--workers",
            str(self.config.workers),
            "--timeout",
            str(self.config.timeout_per_request),
        ]

    def gated_server_command(self, port: int, handoff: Path, gate: Path) -> list[str]:
        """The server on its private ``port``, taking the front's socket at the gate
        (``serve.py --accept-gate``, ``local/gate.py``).

        Args:
            port: the private port.
            handoff: the front's handoff socket.
            gate: the gate file.

        Returns:
            argv.
        """
        return [*self.server_command(port), *self.gate_args(handoff, gate)]

    def provision_revision(self, timeout: float) -> None:
        """See LocalProcessService.provision_revision; a revision that fails leaves no files
        (a model it downloaded is removed with its folder).

        Args:
            timeout: seconds.
        """
        with self._revision_folder_removed_on_failure():
            super().provision_revision(timeout)

    @contextlib.contextmanager
    def candidate_environment(self) -> Iterator[None]:
        """A canary's candidate that fails to start leaves no files either.

        Yields:
            While the candidate's server starts.
        """
        with self._revision_folder_removed_on_failure():
            yield

    @contextlib.contextmanager
    def _revision_folder_removed_on_failure(self) -> Iterator[None]:
        """Removes the folder of ``self.config``'s revision if it did not exist before and what
        runs inside fails."""
        folder = self.workdir / REVISIONS_DIR / self.config.config_hash()
        existed = folder.exists()
        try:
            yield
        except BaseException:
            if not existed:
                shutil.rmtree(folder, ignore_errors=True)
            raise

    def server_env(self) -> dict[str, str]:
        """Adds what MLflow needs to run offline and with a file store."""
        env = super().server_env()
        for k, v in serve.SERVER_ENV_DEFAULTS.items():
            env.setdefault(k, v)
        return env

    def format_request(self, data: Any) -> tuple[dict[str, str], bytes]:
        """MLflow's /invocations formats: DataFrame -> dataframe_split, arrays -> inputs.

        Args:
            data: a pandas DataFrame, numpy array, list, or a ready MLflow payload (dict).

        Returns:
            (headers, body).
        """
        payload: Any
        if hasattr(data, "to_dict") and hasattr(data, "columns"):
            # pandas' JSON spliced in as is: decoding and re-encoding it cost 4x (batch jobs).
            split = data.to_json(orient="split", index=False)
            return {"Content-Type": "application/json"}, f'{{"dataframe_split": {split}}}'.encode()
        elif hasattr(data, "tolist"):
            payload = {"inputs": data.tolist()}
        elif isinstance(data, dict):
            payload = data
        else:
            payload = {"inputs": list(data)}
        return {"Content-Type": "application/json"}, json.dumps(payload).encode()

    def parse_response(self, body: bytes) -> Any:
        """Returns the `predictions` of MLflow's answer.

        Args:
            body: response body.

        Returns:
            The predictions.
        """
        out = json.loads(body)
        if isinstance(out, dict) and "predictions" in out:
            return out["predictions"]
        return out

    def curl_example(self) -> str:
        """A request in MLflow's `dataframe_split` format.

        Returns:
            A curl command line.
        """
        return self._curl('{"dataframe_split": {"columns": [...], "data": [[...]]}}')
