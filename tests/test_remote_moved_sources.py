"""Services and artifacts saved before the remote flavors' configs moved (issue 24: from
``flavors/<name>/service.py`` to ``flavors/<name>/config.py``) still load.

ZenML stores a config's source path as its ``type`` and checks it as a literal; the old
module re-exports the class, and the class reads its former path as its own.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from zenml_model_deployers.materializer import service_from_json, service_to_json
from zenml_model_deployers.service import DeploymentService


def _huggingface() -> tuple[DeploymentService, str]:
    from zenml_model_deployers.flavors.huggingface.config import HuggingFaceDeploymentConfig
    from zenml_model_deployers.flavors.huggingface.service import (
        HuggingFaceDeploymentService,
        HuggingFaceDeploymentStatus,
    )

    cfg = HuggingFaceDeploymentConfig(deployment_name="moved-hf", model_uri="org/model")
    svc = HuggingFaceDeploymentService(
        uuid=uuid.uuid4(),
        config=cfg,
        status=HuggingFaceDeploymentStatus(live_config=cfg.model_dump(mode="json")),
    )
    return svc, "zenml_model_deployers.flavors.huggingface.service.HuggingFaceDeploymentConfig"


def _databricks() -> tuple[DeploymentService, str]:
    from zenml_model_deployers.flavors.databricks.config import (
        DatabricksDeploymentConfig,
        InferenceTable,
    )
    from zenml_model_deployers.flavors.databricks.service import (
        DatabricksDeploymentService,
        DatabricksDeploymentStatus,
    )

    cfg = DatabricksDeploymentConfig(
        deployment_name="moved-dbx",
        model_uri="models:/main.default.iris/3",
        host="https://example.cloud.databricks.com",
        token="{{databricks.token}}",
        inference_table=InferenceTable(catalog_name="main", schema_name="logs"),
    )
    svc = DatabricksDeploymentService(
        uuid=uuid.uuid4(),
        config=cfg,
        status=DatabricksDeploymentStatus(live_config=cfg.model_dump(mode="json")),
    )
    return svc, "zenml_model_deployers.flavors.databricks.service.DatabricksDeploymentConfig"


CASES = {"huggingface": _huggingface, "databricks": _databricks}


@pytest.mark.parametrize("flavor", sorted(CASES))
def test_a_service_saved_with_the_configs_old_source_path_still_loads(flavor: str) -> None:
    service, old_source = CASES[flavor]()
    doc: dict[str, Any] = service_to_json(service)
    new_source = doc["service"]["config"]["type"]
    assert new_source != old_source, "the config moved: its source path is new"
    # What a deployment saved before the move holds: the old path, in the config and in the
    # live config the status records (the service store row has the same documents).
    doc["service"]["config"]["type"] = old_source
    doc["service"]["status"]["live_config"]["type"] = old_source
    loaded = service_from_json(doc, prefer_live=False)
    assert type(loaded) is type(service)
    assert type(loaded.config) is type(service.config)
    assert loaded.config.type == new_source, "saved again, it records the new path"
    assert loaded.config.config_hash() == service.config.config_hash(), "same revision"
    live = type(loaded.config).model_validate(loaded.status.live_config)
    assert live.config_hash() == service.config.config_hash()
    # The old import path keeps working for code that names it.
    module, _, name = old_source.rpartition(".")
    assert getattr(__import__(module, fromlist=[name]), name) is type(service.config)


def test_names_the_docs_used_warn_at_their_old_path() -> None:
    from zenml_model_deployers.flavors.huggingface import config, service

    with pytest.warns(DeprecationWarning, match="flavors.huggingface.config"):
        assert service.HuggingFaceDeploymentConfig is config.HuggingFaceDeploymentConfig
