"""Services saved before a class moved module still load: ZenML records a config's and a
status's class path in their JSON and validates it as that exact string."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from zenml.utils.typed_model import BaseTypedModel

from zenml_model_deployers.flavors.bentoml.config import BentoMLDeploymentConfig
from zenml_model_deployers.flavors.bentoml.service import BentoMLDeploymentService
from zenml_model_deployers.flavors.mlflow.config import MLflowDeploymentConfig
from zenml_model_deployers.flavors.mlflow.service import MLflowDeploymentService
from zenml_model_deployers.flavors.vllm.config import VLLMDeploymentConfig
from zenml_model_deployers.flavors.vllm.service import VLLMDeploymentService
from zenml_model_deployers.local.config import LocalDeploymentStatus
from zenml_model_deployers.materializer import service_from_json, service_to_json


def _saved_before_the_move(doc: dict[str, Any], config_path: str) -> dict[str, Any]:
    """The artifact document as the release before the move wrote it."""
    old = json.loads(json.dumps(doc))
    old["service"]["config"]["type"] = config_path
    old["service"]["status"]["type"] = "zenml_model_deployers.local.service.LocalDeploymentStatus"
    return old


@pytest.mark.parametrize(
    ("service_cls", "config"),
    [
        (MLflowDeploymentService, MLflowDeploymentConfig(deployment_name="m", model_uri="/x")),
        (BentoMLDeploymentService, BentoMLDeploymentConfig(deployment_name="b", model_uri="b:1")),
        (
            VLLMDeploymentService,
            VLLMDeploymentConfig(deployment_name="v", model_uri="org/model", require_gpu=False),
        ),
    ],
)
def test_a_service_saved_with_the_former_config_and_status_paths_loads(
    service_cls: Any, config: Any
) -> None:
    status_cls = service_cls.model_fields["status"].annotation
    svc = service_cls(uuid=uuid.uuid4(), config=config, status=status_cls(public_port=8123))
    doc = service_to_json(svc)
    # What is saved now names the new module.
    assert doc["service"]["config"]["type"] == f"{type(config).__module__}.{type(config).__name__}"
    old_path = f"{service_cls.__module__}.{type(config).__name__}"
    old = _saved_before_the_move(doc, old_path)
    if status_cls is not LocalDeploymentStatus:  # a flavor's own status did not move
        old["service"]["status"]["type"] = doc["service"]["status"]["type"]

    loaded = service_from_json(old, prefer_live=False)
    assert type(loaded) is service_cls
    assert type(loaded.config) is type(config)
    assert loaded.config.config_hash() == config.config_hash()
    assert loaded.status.public_port == 8123

    # ZenML's own loader (the path a service row or a typed model takes) finds the class
    # under its former path too.
    again = BaseTypedModel.from_dict(old["service"])
    assert type(again) is service_cls and type(again.config) is type(config)
