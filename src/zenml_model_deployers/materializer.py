"""ServiceMaterializer: the full service as JSON (not just an id), plus an HTML card.

Loading prefers the live service row (current status); if the row is gone, it returns a
*detached* service rebuilt from the JSON, which ``recreate`` can deploy again with the exact
serving conditions the run recorded.
"""

from __future__ import annotations

import html
import json
import os
from typing import Any, ClassVar

from zenml.enums import ArtifactType, VisualizationType
from zenml.materializers.base_materializer import BaseMaterializer
from zenml.metadata.metadata_types import MetadataType, Uri

from zenml_model_deployers.secrets import redact_obj
from zenml_model_deployers.service import (
    SCHEMA_VERSION,
    DeploymentService,
    load_service_class,
    service_from_response,
)
from zenml_model_deployers.states import state_word

SERVICE_FILENAME = "service.json"
CARD_FILENAME = "deployment.html"


def service_to_json(service: DeploymentService) -> dict[str, Any]:
    """The artifact document of a service (secrets redacted).

    Args:
        service: the service.

    Returns:
        A JSON-able dict.
    """
    return {
        "schema_version": SCHEMA_VERSION,
        "service_source": service.model_dump()["type"],
        "flavor": service.FLAVOR,
        "url": service.prediction_url,
        "revision": service.status.revision,
        "config_hash": service.status.config_hash or service.config.config_hash(),
        "service": redact_obj(service.model_dump(mode="json")),
    }


def service_from_json(doc: dict[str, Any], prefer_live: bool = True) -> DeploymentService:
    """Rebuilds a service from its artifact document.

    Args:
        doc: what :func:`service_to_json` wrote.
        prefer_live: return the live service row (current status) when it still exists.

    Returns:
        The live service, or a detached one built from the document.
    """
    cls = load_service_class(doc["service_source"])
    data = doc["service"]
    recorded: DeploymentService = cls.model_validate(data)
    recorded._detached = True
    if prefer_live:
        from zenml.client import Client

        try:
            resp = Client().get_service(data["uuid"])
        except KeyError:
            resp = None
        if resp is not None and resp.service_source:
            live = service_from_response(resp)
            live.update_status()
            live._recorded = recorded
            return live
    return recorded


class ServiceMaterializer(BaseMaterializer):
    """Reads and writes zenml-model-deployers services."""

    ASSOCIATED_TYPES: ClassVar[tuple[type[Any], ...]] = (DeploymentService,)
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[ArtifactType] = ArtifactType.SERVICE

    def load(self, data_type: type[Any]) -> DeploymentService:
        """Loads the service (live row first, else detached from JSON).

        Args:
            data_type: expected type.

        Returns:
            The service.
        """
        with self.artifact_store.open(os.path.join(self.uri, SERVICE_FILENAME), "r") as f:
            doc = json.loads(f.read())
        return service_from_json(doc)

    def save(self, data: DeploymentService) -> None:
        """Writes the full service JSON.

        Args:
            data: the service.
        """
        with self.artifact_store.open(os.path.join(self.uri, SERVICE_FILENAME), "w") as f:
            f.write(json.dumps(service_to_json(data), indent=2))

    def save_visualizations(self, data: DeploymentService) -> dict[str, VisualizationType]:
        """Writes an HTML card (URL, state, model, revision, curl) for the dashboard.

        Args:
            data: the service.

        Returns:
            The card's path and type.
        """
        path = os.path.join(self.uri, CARD_FILENAME)
        with self.artifact_store.open(path, "w") as f:
            f.write(render_card(data))
        return {path.replace("\\", "/"): VisualizationType.HTML}

    def extract_metadata(self, data: DeploymentService) -> dict[str, MetadataType]:
        """Artifact metadata: URL, flavor, deployment, revision, state.

        Args:
            data: the service.

        Returns:
            Metadata.
        """
        md: dict[str, MetadataType] = {
            "flavor": data.FLAVOR,
            "deployment_name": data.deployment_name,
            "revision": data.status.revision,
            "config_hash": data.status.config_hash,
            "state": state_word(data.status.state),
        }
        if data.prediction_url:
            md["deployed_model_url"] = Uri(data.prediction_url)
        return md


def render_card(service: DeploymentService) -> str:
    """An HTML card describing a deployment.

    Args:
        service: the service.

    Returns:
        HTML.
    """
    e = html.escape
    url = service.prediction_url or "(not deployed)"
    curl = service.curl_example()
    rows = [
        ("URL", url),
        ("State", state_word(service.status.state)),
        ("Flavor", service.FLAVOR),
        ("Deployment", service.deployment_name),
        ("Model", service.config.model_name or "-"),
        ("Model URI", service.config.model_uri),
        ("Revision", f"{service.status.revision} ({service.status.config_hash})"),
    ]
    body = "".join(f"<tr><th>{e(k)}</th><td><code>{e(str(v))}</code></td></tr>" for k, v in rows)
    return (
        "<div style='font-family:sans-serif;border:1px solid #ccc;border-radius:8px;"
        "padding:12px;max-width:760px'>"
        f"<h3 style='margin-top:0'>Deployment {e(service.deployment_name)}</h3>"
        f"<table>{body}</table><p>Query it:</p><pre>{e(curl)}</pre></div>"
    )
