"""`make demo`: train, deploy to local MLflow, read the URL from run metadata, predict.

It uses your ZenML setup (ZENML_CONFIG_PATH, or ZenML's default) and says what it changes
before it changes it.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

COMPONENT = "zmd-mlflow-local"
STACK = "zmd-quickstart"


def prepare_stack() -> None:
    """Registers the flavor, a `zmd-mlflow` model deployer and a stack, and activates it."""
    from zenml.client import Client

    from zenml_model_deployers.flavors import ensure_deployer_stack

    active = Client().active_stack_model.name
    if active != STACK:
        print(
            f"[demo] This demo activates ZenML stack '{STACK}' (default orchestrator and "
            f"artifact store + model deployer '{COMPONENT}' of flavor zmd-mlflow).\n"
            f"[demo] Your active stack is '{active}'; go back to it with: zenml stack set {active}"
        )
    for line in ensure_deployer_stack(STACK, COMPONENT, "zmd-mlflow"):
        print(f"[demo] registered {line}")


def main() -> None:
    """The whole demo."""
    os.environ.setdefault("ZENML_ANALYTICS_OPT_IN", "false")
    # MLflow warns that the inferred *output* schema (class ids) is integer: expected here.
    warnings.filterwarnings("ignore", message=".*Inferred schema contains integer.*")
    prepare_stack()
    from pipelines import DEPLOYMENT, train_and_deploy
    from predict import main as predict_main

    c = float(os.environ.get("DEMO_C", "1.0"))
    print(f"[demo] running pipeline train_and_deploy (C={c}) ...")
    train_and_deploy(c=c)
    print("[demo] reading deployed_model_url from the run's step metadata ...")
    predict_main()
    from zenml_model_deployers.flavors import get_deployer

    svc = get_deployer("zmd-mlflow").find_deployment(DEPLOYMENT)
    assert svc is not None and svc.prediction_url
    url = svc.prediction_url
    print(
        "\n[demo] Done. The model keeps serving at the same URL across runs:\n"
        f"  {url}\n"
        "Query it:\n"
        f"  curl -s -X POST {url} -H 'Content-Type: application/json' \\\n"
        '    -d \'{"dataframe_split": {"columns": ["sepal_length", "sepal_width", '
        '"petal_length", "petal_width"], "data": [[5.1, 3.5, 1.4, 0.2]]}}\'\n'
        "Inspect / stop / delete it:\n"
        f"  .venv/bin/zmd models list\n"
        f"  .venv/bin/zmd models stop {DEPLOYMENT}\n"
        f"  .venv/bin/zmd models delete {DEPLOYMENT} -y\n"
        "Run `make demo` again: an unchanged model keeps the running server; "
        "`DEMO_C=0.1 make demo` rolls a new model out on the same URL."
    )


if __name__ == "__main__":
    main()
