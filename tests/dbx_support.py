"""Fixtures shared by the `zmd-databricks` tests: a local MLflow registry standing in for Unity
Catalog (three registered versions), the serving-endpoints double, the credentials secret and
the stack.

Import the fixtures by name into a test module (``from dbx_support import dbx_double, ...``).
They are session-scoped and backed by one object per test process: pytest makes a separate
fixture of each module that imports them, and the registry costs seconds to fill while the
component's `host` names one double's port.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from zenml_model_deployers.testing.databricks_double import DatabricksDouble

SECRET = "dbx_zmd_test"
TOKEN_REF = "{{" + SECRET + ".token}}"
CLIENT_SECRET_REF = "{{" + SECRET + ".client_secret}}"
CLIENT_ID = "zmd-test-sp"
MODEL = "main.zmd.iris"
STACK = "zmd-test-dbx"
COMPONENT = "zmd-test-databricks"
# Versions registered in the stand-in registry: what each predicts for SAMPLE.
SAMPLE = [[0.0, 1.0], [1.0, 0.0]]
VERSIONS = {"a": "1", "b": "2", "broken": "3"}
_ONCE: dict[str, Any] = {}
EXPECTED = {"a": [0, 0], "b": [1, 1]}


def planted_credentials() -> dict[str, str]:
    """The token and client secret the tests plant in a ZenML secret (created on first use).

    Returns:
        {"token": ..., "client_secret": ...} (the double demands them; leak tests grep).
    """
    from zenml.client import Client

    client = Client()
    try:
        values = client.get_secret(SECRET).secret_values
        return {"token": str(values["token"]), "client_secret": str(values["client_secret"])}
    except KeyError:
        values = {
            "token": f"dapi-planted-{uuid.uuid4().hex}",
            "client_secret": f"dose-planted-{uuid.uuid4().hex}",
        }
        client.create_secret(name=SECRET, values=values)
        return values


def uri(variant: str) -> str:
    """The model reference of a variant ("a", "b", "broken").

    Args:
        variant: the variant.

    Returns:
        ``models:/main.zmd.iris/<version>``.
    """
    return f"models:/{MODEL}/{VERSIONS[variant]}"


@pytest.fixture(scope="session")
def dbx_registry(zenml_env: Path) -> str:
    """A local MLflow registry standing in for Unity Catalog, with versions 1 (predicts 0),
    2 (predicts 1) and 3 (cannot load)."""
    if "registry" in _ONCE:
        return str(_ONCE["registry"])
    import mlflow
    import numpy as np
    from mlflow.models import infer_signature
    from sklearn.dummy import DummyClassifier

    registry = (zenml_env / "uc-registry").as_uri()
    old = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(registry)
    mlflow.set_registry_uri(registry)
    x = np.array(SAMPLE)

    class Broken(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
        def load_context(self, context: object) -> None:
            raise RuntimeError("model weights are corrupt (planted failure)")

        def predict(self, context, model_input):  # type: ignore[no-untyped-def]
            return [0]

    try:
        for constant in (0, 1):
            clf = DummyClassifier(strategy="constant", constant=constant).fit(x, [0, 1])
            with mlflow.start_run():
                mlflow.sklearn.log_model(
                    clf,
                    name="model",
                    registered_model_name=MODEL,
                    signature=infer_signature(x, clf.predict(x)),
                    serialization_format="pickle",
                )
        with mlflow.start_run():
            mlflow.pyfunc.log_model(
                name="model", python_model=Broken(), registered_model_name=MODEL
            )
    finally:
        mlflow.set_tracking_uri(old[0])
        mlflow.set_registry_uri(old[1])
    _ONCE["registry"] = registry
    return registry


@pytest.fixture(scope="session")
def dbx_double(dbx_registry: str, request: pytest.FixtureRequest) -> DatabricksDouble:
    """A running double that accepts the planted token and service principal (closed at the
    end of the session)."""
    if "double" not in _ONCE:
        creds = planted_credentials()
        double = DatabricksDouble(
            registry_uri=dbx_registry,
            tokens={creds["token"]},
            clients={CLIENT_ID: creds["client_secret"]},
            update_delay=0.2,
        ).start()
        request.addfinalizer(double.close)
        _ONCE["double"] = double
    return _ONCE["double"]  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def dbx_component(dbx_double: DatabricksDouble, dbx_registry: str) -> dict[str, Any]:
    """The settings of the `zmd-databricks` component the tests register (references only)."""
    return {
        "host": dbx_double.url,
        "token": TOKEN_REF,
        "registry_uri": dbx_registry,
        "tracking_uri": dbx_registry,
        "default_timeout": 60,
    }


@pytest.fixture(scope="module")
def dbx_stack(dbx_component: dict[str, Any]) -> Iterator[str]:
    """A ZenML stack whose model deployer is `zmd-databricks` (token by secret reference),
    active for the module; the previously active stack comes back afterwards."""
    from zenml.client import Client

    from zenml_model_deployers.flavors import ensure_deployer_stack

    planted_credentials()
    previous = Client().active_stack_model.name
    ensure_deployer_stack(STACK, COMPONENT, flavor="zmd-databricks", configuration=dbx_component)
    yield STACK
    if Client().active_stack_model.name != previous:
        Client().activate_stack(previous)


@pytest.fixture(scope="module")
def dbx_deployer(dbx_stack: str) -> Any:
    """The active stack's `zmd-databricks` deployer (talking to the double)."""
    from zenml_model_deployers.flavors import get_deployer

    return get_deployer("zmd-databricks")
