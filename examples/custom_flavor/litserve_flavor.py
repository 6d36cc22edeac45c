"""A custom model-deployer flavor in one file: LitServe serving a scikit-learn model.

LitServe (`pip install litserve`) is a popular model server that zenml-model-deployers does
not ship. This file is everything it takes to deploy with it from ZenML, with what the
built-in flavors have: a stable URL, zero-downtime updates, rollback of a failed update,
stop/start, locking, the service artifact, run metadata, the steps and the `zmd` CLI.

Register it the ZenML way, from the folder holding this file:

    zenml model-deployer flavor register litserve_flavor.LitServeDeployerFlavor
    zenml model-deployer register litserve --flavor=litserve
    zenml stack register litserve-stack -o default -a default -d litserve --set

The file has two halves: the flavor (config, service, deployer, flavor classes), which
ZenML imports, and the server, which the service runs as ``python litserve_flavor.py``.
"""

import hashlib
import pickle
import sys
from pathlib import Path
from typing import Any, ClassVar

import litserve as ls
from zenml.models.v2.misc.service import ServiceType

from zenml_model_deployers.deployer import BaseDeployer, BaseDeployerConfig, BaseDeployerFlavor
from zenml_model_deployers.errors import ConfigurationError
from zenml_model_deployers.local.process import python_executable
from zenml_model_deployers.local.service import (
    LocalDeploymentConfig,
    LocalProcessService,
    make_tree_private,
    private_dir,
    zmd_home,
)

FLAVOR_NAME = "litserve"


# ---------------------------------------------------------------------------------- the flavor
class LitServeDeploymentConfig(LocalDeploymentConfig):
    """How to serve one revision (every field except provenance is part of its hash).

    Attributes:
        model_uri: path of a scikit-learn model saved with joblib (the step saves it for you).
        workers: LitServe inference workers.
    """

    health_path: str = "/health"  # LitServe answers 200 once every worker has loaded the model
    workers: int = 1


class LitServeDeploymentService(LocalProcessService):
    """A LitServe process behind the deployment's stable URL (the runtime does the rest)."""

    SERVICE_TYPE: ClassVar[ServiceType] = ServiceType(
        name="litserve-deployment",
        type="model-serving",
        flavor=FLAVOR_NAME,
        description="scikit-learn model served by LitServe",
    )
    FLAVOR: ClassVar[str] = FLAVOR_NAME
    PREDICT_PATH: ClassVar[str] = "/predict"

    config: LitServeDeploymentConfig

    def server_command(self, port: int) -> list[str]:
        """This very file, run as the server, on the private port the runtime chose.

        Args:
            port: the private port.

        Returns:
            argv.
        """
        return [
            python_executable(),
            str(Path(__file__).resolve()),
            self.config.model_uri,
            str(port),
            str(self.config.workers),
        ]

    def format_request(self, data: Any) -> tuple[dict[str, str], bytes]:
        """`{"inputs": rows}` from a DataFrame, an array or a list of rows.

        Args:
            data: the input rows.

        Returns:
            (headers, body).
        """
        import json

        rows = data.to_numpy().tolist() if hasattr(data, "to_numpy") else data
        rows = rows.tolist() if hasattr(rows, "tolist") else rows
        return {"Content-Type": "application/json"}, json.dumps({"inputs": rows}).encode()

    def parse_response(self, body: bytes) -> Any:
        """The `predictions` of the server's answer.

        Args:
            body: the response body.

        Returns:
            The predictions, one per row.
        """
        import json

        return json.loads(body)["predictions"]


class LitServeDeployerConfig(BaseDeployerConfig):
    """Settings of a `litserve` model deployer component (`default_timeout` is inherited)."""


class LitServeDeployerFlavor(BaseDeployerFlavor):
    """What `zenml model-deployer flavor register` records: names and an import path."""

    FLAVOR_NAME: ClassVar[str] = FLAVOR_NAME
    DISPLAY_NAME: ClassVar[str] = "LitServe (custom)"
    CONFIG_CLASS: ClassVar[type[BaseDeployerConfig]] = LitServeDeployerConfig
    IMPLEMENTATION: ClassVar[str] = f"{__name__}.LitServeDeployer"


class LitServeDeployer(BaseDeployer):
    """Deploys scikit-learn models with LitServe, each behind a stable URL."""

    NAME: ClassVar[str] = "LitServe"
    FLAVOR: ClassVar[type[BaseDeployerFlavor]] = LitServeDeployerFlavor
    SERVICE_CLASS: ClassVar[type[LitServeDeploymentService]] = LitServeDeploymentService

    def package_model(self, model: Any, name: str, input_example: Any = None) -> str:
        """Saves the model object with joblib under a name that is a digest of its state, so
        an unchanged model gives the same `model_uri`, the same hash, and no restart.

        Args:
            model: a fitted scikit-learn estimator.
            name: the deployment name.
            input_example: unused.

        Returns:
            The saved file's path.

        Raises:
            ConfigurationError: the object is not a scikit-learn estimator.
        """
        import joblib
        from sklearn.base import BaseEstimator

        if not isinstance(model, BaseEstimator):
            raise ConfigurationError(
                f"The litserve flavor serves scikit-learn estimators, not {type(model).__name__}.",
                hint="pass a fitted scikit-learn estimator, or `model_uri=` a joblib file.",
            )
        digest = hashlib.sha256(pickle.dumps(model, protocol=4)).hexdigest()[:16]
        path = private_dir(zmd_home() / "models" / FLAVOR_NAME) / f"{name}-{digest}.joblib"
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            joblib.dump(model, tmp)
            make_tree_private(tmp)
            tmp.replace(path)
        return str(path)


# ---------------------------------------------------------------------------------- the server
class SklearnLitAPI(ls.LitAPI):
    """LitServe's side: load the model once per worker, predict a batch of rows."""

    model_path = ""

    def setup(self, device: str) -> None:
        """Loads the model in the worker.

        Args:
            device: LitServe's device (cpu).
        """
        import joblib

        self.model = joblib.load(self.model_path)

    # No `from __future__ import annotations` in this file: LitServe reads this annotation
    # at run time to make the JSON body the request.
    def decode_request(self, request: dict[str, Any]) -> Any:
        """`{"inputs": rows}` to an array.

        Args:
            request: the JSON body.

        Returns:
            A 2-D array.
        """
        import numpy as np

        return np.asarray(request["inputs"], dtype=float)

    def predict(self, x: Any) -> Any:
        """The model's predictions.

        Args:
            x: rows.

        Returns:
            Predictions.
        """
        return self.model.predict(x)

    def encode_response(self, output: Any) -> dict[str, Any]:
        """Predictions as JSON.

        Args:
            output: predictions.

        Returns:
            `{"predictions": [...]}`.
        """
        return {"predictions": output.tolist()}


def serve(model_path: str, port: int, workers: int) -> None:
    """Runs LitServe on 127.0.0.1:port until terminated.

    The model is loaded here first: a file that is no model ends the process at once, with
    the reason as the last line of its log, which the deploy's error then quotes.

    Args:
        model_path: the joblib file.
        port: the port.
        workers: inference workers.
    """
    import joblib

    try:
        joblib.load(model_path)
    except Exception as e:
        sys.exit(f"litserve: cannot load the model {model_path}: {type(e).__name__}: {e}")
    api = SklearnLitAPI()
    api.model_path = model_path
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=workers)
    server.run(host="127.0.0.1", port=port, generate_client_file=False)


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
