"""The conformance suite, run against `zmd-databricks` with the offline serving-endpoints
double driven through the real `databricks-sdk` client; predictions come from the real MLflow
models registered in the stand-in Unity Catalog registry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import requests
from dbx_support import (  # noqa: F401
    EXPECTED,
    SAMPLE,
    dbx_component,
    dbx_deployer,
    dbx_double,
    dbx_registry,
    dbx_stack,
    uri,
)

from zenml_model_deployers.flavors.databricks.config import DatabricksDeploymentConfig
from zenml_model_deployers.flavors.databricks.service import DatabricksDeploymentService
from zenml_model_deployers.service import DeploymentService
from zenml_model_deployers.testing.conformance import DeployerConformance
from zenml_model_deployers.testing.databricks_double import DatabricksDouble


class TestDatabricksConformance(DeployerConformance):
    """zmd-databricks passes the suite."""

    sample_input = SAMPLE
    name_prefix = "dbx"
    timeout = 30.0
    double: DatabricksDouble

    @pytest.fixture(autouse=True)
    def _double(self, dbx_double: DatabricksDouble) -> None:  # noqa: F811
        type(self).double = dbx_double

    @pytest.fixture
    def deployer(self, dbx_deployer: Any) -> Any:  # noqa: F811
        return dbx_deployer

    @pytest.fixture
    def stack_with_deployer(self, dbx_stack: str) -> str:  # noqa: F811
        return dbx_stack

    def make_config(self, variant: str, name: str, **overrides: Any) -> DatabricksDeploymentConfig:
        return DatabricksDeploymentConfig(
            deployment_name=name, model_name=name, model_uri=uri(variant), **overrides
        )

    def expected(self, variant: str) -> Any:
        return EXPECTED[variant]

    def assert_nothing_left(self, service: DeploymentService) -> None:
        assert self.double.endpoint(service.deployment_name) is None
        assert f"zmd-{service.deployment_name}" not in self.double.secret_scopes()

    def leftovers(self, deployer: Any, name: str) -> list[str]:
        # The endpoint named after the deployment (ours: tagged by zmd) and its secret scope.
        left = []
        ep = self.double.endpoint(name)
        if ep is not None and ep["creator"] != "someone-else@example.com":
            left.append(f"endpoint/{name}")
        left += [f"secret-scope/{s}" for s in self.double.secret_scopes() if name in s]
        return left

    def occupy_name(self, name: str) -> tuple[dict[str, Any], Callable[[], None]]:
        self.double.create_foreign_endpoint(name)

        def release() -> None:
            ep = self.double.endpoint(name)
            assert ep is not None and ep["creator"] == "someone-else@example.com"
            self.double.delete_endpoint(name)

        return {}, release

    def backend_writes(self) -> int | None:
        return sum(
            1
            for r in self.double.requests
            if r["method"] in ("POST", "PUT", "PATCH", "DELETE")
            and not r["path"].endswith("/invocations")
        )

    def assert_url_gone(self, service: DeploymentService, url: str) -> None:
        # Databricks URLs are on the workspace host, which keeps answering: 404 by name.
        assert isinstance(service, DatabricksDeploymentService)
        headers = dict(service.workspace().config.authenticate())
        r = requests.post(url, json={"instances": SAMPLE}, headers=headers, timeout=5)
        assert r.status_code == 404 and "does not exist" in r.text

    def assert_secret_delivered(self, service: DeploymentService, value: str) -> None:
        assert isinstance(service, DatabricksDeploymentService)
        env = self.double.entity_env(service.endpoint_name, service.config.served_entity_name)
        assert env["ZMD_CONFORMANCE_TOKEN"] == value
