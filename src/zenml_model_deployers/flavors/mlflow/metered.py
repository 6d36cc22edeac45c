"""The app a `zmd-mlflow` server serves on the direct data path: MLflow's scoring app
(``mlflow.pyfunc.scoring_server.app:app``, the app MLflow's own uvicorn command serves) counted by
``local/metering.py``'s middleware, with the gate and the draining retirement installed.

Runs inside the server process (``serve.py``), never in the deploying one. uvicorn imports this
module (``zenml_model_deployers.flavors.mlflow.metered:app``) in every worker; ``serve.py`` sets
the environment first (the metrics folder and the labels).
"""

from __future__ import annotations

import os

from zenml_model_deployers.local.metering import REVISION_ENV, Metered, worker_app


def _app() -> Metered:
    from mlflow.pyfunc.scoring_server.app import app as mlflow_app

    return worker_app(mlflow_app)


app = _app() if os.environ.get(REVISION_ENV) else None
