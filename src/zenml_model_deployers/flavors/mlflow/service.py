"""A model served by `mlflow models serve --env-manager local` behind the deployment's relay."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from zenml.models.v2.misc.service import ServiceType

from zenml_model_deployers.flavors.mlflow.flavor import FLAVOR_NAME
from zenml_model_deployers.local.process import ProcessHandle, python_executable
from zenml_model_deployers.local.service import LocalDeploymentConfig, LocalProcessService


class MLflowDeploymentConfig(LocalDeploymentConfig):
    """How to serve an MLflow model.

    Attributes:
        model_uri: any MLflow model URI: `runs:/...`, `models:/...`, or a local path.
        workers: uvicorn workers of the server.
        timeout_per_request: the server's request timeout in seconds.
    """

    workers: int = 1
    timeout_per_request: int = 60


class MLflowDeploymentService(LocalProcessService):
    """An MLflow model server process behind a stable URL."""

    SERVICE_TYPE: ClassVar[ServiceType] = ServiceType(
        name="zmd-mlflow-deployment",
        type="model-serving",
        flavor=FLAVOR_NAME,
        description="MLflow model served locally by zenml-model-deployers",
    )
    FLAVOR: ClassVar[str] = FLAVOR_NAME
    PREDICT_PATH: ClassVar[str] = "/invocations"
    # A restart keeps MLflow's own settings (tracking URI, file store) from the deploying process.
    RESTART_INHERITED_ENV: ClassVar[tuple[str, ...]] = ("MLFLOW_",)

    config: MLflowDeploymentConfig

    def server_command(self, port: int) -> list[str]:
        """`mlflow models serve` from this very environment (no conda/virtualenv rebuild).

        Args:
            port: private port.

        Returns:
            argv.
        """
        return [
            python_executable(),
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            self.config.model_uri,
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(self.config.workers),
            "--timeout",
            str(self.config.timeout_per_request),
        ]

    def server_env(self) -> dict[str, str]:
        """Adds what `mlflow models serve` needs to run offline and with a file store."""
        env = super().server_env()
        env.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def restart_command(
        self, server: ProcessHandle, argv: list[str], env: dict[str, str], port: int
    ) -> tuple[list[str], dict[str, str]]:
        """Restarts run the uvicorn server that `mlflow models serve` started, directly.

        `mlflow models serve` only resolves the model to a local path and then runs uvicorn
        with that path in its environment; both import MLflow, so a restart that skips the
        wrapper is back in about half the time.

        Args:
            server: the running `mlflow models serve` process.
            argv: its command.
            env: its environment.
            port: its private port.

        Returns:
            (argv, env) of the process listening on `port`, else the given ones.
        """
        import psutil

        live = server.process()
        if live is None:
            return argv, env
        try:
            for child in live.children(recursive=True):
                for conn in child.net_connections(kind="tcp"):
                    if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                        return child.cmdline(), child.environ()
        except psutil.Error:
            pass
        return argv, env

    def format_request(self, data: Any) -> tuple[dict[str, str], bytes]:
        """MLflow's /invocations formats: DataFrame -> dataframe_split, arrays -> inputs.

        Args:
            data: a pandas DataFrame, numpy array, list, or a ready MLflow payload (dict).

        Returns:
            (headers, body).
        """
        payload: Any
        if hasattr(data, "to_dict") and hasattr(data, "columns"):
            payload = {"dataframe_split": json.loads(data.to_json(orient="split", index=False))}
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
