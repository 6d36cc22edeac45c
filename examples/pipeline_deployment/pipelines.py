"""A pipeline served as an HTTP service: ZenML's pipeline deployments (`zenml pipeline deploy`)
on the `zmd-local` Deployer flavor.

`greet` answers each invocation with a greeting; `run.py` changes its code (``greeting.py``)
between two deploys to show an update that fails no request.
"""

from __future__ import annotations

from greeting import VERSION
from zenml import pipeline, step


@step
def greet(name: str) -> str:
    """The pipeline's one step."""
    return f"hello {name} from {VERSION}"


@pipeline(settings={"deployer": {"generate_auth_key": True}})
def greeter(name: str = "world") -> str:
    """Invoked with `{"parameters": {"name": ...}}` on the deployment's `/invoke`."""
    return greet(name)
