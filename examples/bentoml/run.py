"""Run the BentoML example end to end: train, build a bento, serve it, read the URL, predict.

    python examples/bentoml/run.py          # or DEMO_C=0.1 for a new model (rolled out in place)

It registers the `zmd-bentoml` flavor, a model deployer and a stack `zmd-bentoml-example`
(the active stack's orchestrator and artifact store), and activates that stack while it
runs: the stack that was active before is active again at the end. Everything it creates stays
inside the ZenML config it runs in: the stack and its component, the deployment's files, and
BentoML's store (BentoML's home follows the ZenML config unless you set BENTOML_HOME). To try it without touching your setup:
`ZENML_CONFIG_PATH=/tmp/zmd-bento python examples/bentoml/run.py`, then remove that folder
(after `zmd models delete iris-bento -y`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from zenml_model_deployers.flavors import keep_active_stack

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("ZENML_ANALYTICS_OPT_IN", "false")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")

COMPONENT = "zmd-bento-local"
STACK = "zmd-bentoml-example"


# The user's active stack is active again when it ends (also on failure).
@keep_active_stack()
def main() -> None:
    """The whole example."""
    from zenml.client import Client
    from zenml.utils.io_utils import get_global_config_directory

    from zenml_model_deployers.flavors import ensure_deployer_stack
    from zenml_model_deployers.flavors.bentoml import bentoml_home

    print(
        f"[bentoml] everything goes into the ZenML config {get_global_config_directory()} "
        f"(BentoML's store: {bentoml_home()})"
    )
    active = Client().active_stack_model.name
    if active != STACK:
        print(f"[bentoml] using stack '{STACK}' while it runs ('{active}' is active again after)")
    for line in ensure_deployer_stack(STACK, COMPONENT, "zmd-bentoml"):
        print(f"[bentoml] registered {line}")

    from pipelines import DEPLOYMENT, train_and_serve_bento

    c = float(os.environ.get("DEMO_C", "1.0"))
    run = train_and_serve_bento(c=c)
    assert run is not None
    step = Client().get_pipeline_run(run.id).steps["bentoml_deployer_step"]
    url = step.run_metadata["deployed_model_url"]
    print(f"[bentoml] deployed_model_url (from run metadata): {url}")
    service = step.outputs["bentoml_deployment"][0].load()
    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
    print(
        f"[bentoml] service.predict(rows, api='classify') -> {service.predict(rows, api='classify')}"
    )
    print(
        f"\n[bentoml] Query it:\n  curl -s -X POST {url} -H 'Content-Type: application/json' "
        "-d '{\"input_data\": [[5.1, 3.5, 1.4, 0.2]]}'\n"
        f"[bentoml] Logs: zmd models logs {DEPLOYMENT}   Stop: zmd models stop {DEPLOYMENT}"
    )


if __name__ == "__main__":
    main()
