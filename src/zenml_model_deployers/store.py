"""Deployments as rows of ZenML's service store: create, find, load, persist, delete.

ZenML's store is the one record of what serves (``zenml model-deployer models ...`` and the
dashboard read it too). The deployer decides *when* to write; this module is *how*: rows are
created with ZenML's id, carry the service class, the status (with the live config, see
``service.py``) and searchable labels, and load back as services.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any
from uuid import UUID

from zenml.client import Client
from zenml.logger import get_logger
from zenml.models.v2.misc.service import ServiceType

from zenml_model_deployers.config import DeploymentConfig
from zenml_model_deployers.errors import DeploymentNotFoundError
from zenml_model_deployers.service import DeploymentService, service_from_response

logger = get_logger(__name__)


def create_row(
    config: DeploymentConfig, service_type: ServiceType, model_version_id: UUID | None
) -> UUID:
    """Creates a deployment's row (no service class yet: :func:`persist` records it).

    Args:
        config: the deployment's config.
        service_type: the flavor's ZenML service type.
        model_version_id: ZenML model version to link the row to.

    Returns:
        The row's id (the service's uuid).
    """
    resp = Client().create_service(
        config=config, service_type=service_type, model_version_id=model_version_id
    )
    return resp.id


def delete_row(uuid: UUID) -> None:
    """Deletes a deployment's row; a row already gone is no error.

    Args:
        uuid: the service id.
    """
    with contextlib.suppress(KeyError):
        Client().delete_service(uuid)


def row_exists(uuid: UUID) -> bool:
    """Whether the service store still has this row.

    Args:
        uuid: the service id.

    Returns:
        True if it exists.
    """
    try:
        Client().get_service(uuid, hydrate=False)
    except KeyError:
        return False
    return True


def persist(service: DeploymentService, model_version_id: UUID | None = None) -> None:
    """Writes the service's class, state, URL and labels to its row (a detached service,
    rebuilt from an artifact, has none: nothing is written).

    Args:
        service: the service.
        model_version_id: re-link to this model version.
    """
    if service.is_detached:
        return
    service.status.prediction_url = service.prediction_url
    Client().update_service(
        id=service.uuid,
        name=service.config.service_name,
        service_source=service.model_dump()["type"],
        admin_state=service.admin_state,
        status=service.status.model_dump(mode="json"),
        labels=service.labels(),
        prediction_url=service.prediction_url,
        health_check_url=service.healthcheck_url,
        model_version_id=model_version_id,
    )


def find_deployment(flavor: str, deployment_name: str) -> DeploymentService | None:
    """The deployment of ``flavor`` with that name, status read from the backend.

    Args:
        flavor: the flavor name (``zmd-...``).
        deployment_name: the deployment name.

    Returns:
        The service or None.
    """
    page = Client().list_services(
        flavor=flavor, service_name=f"zenml-{deployment_name}", hydrate=True, size=50
    )
    for resp in page.items:
        if not resp.service_source:
            continue
        svc = service_from_response(resp)
        if svc.deployment_name == deployment_name:
            svc.update_status()
            return svc
    return None


def service_rows(flavor: str | None = None, service_uuid: UUID | None = None) -> Iterator[Any]:
    """ZenML's service rows of ``flavor`` (or every flavor; or the one with ``service_uuid``),
    newest first, page by page: only rows that record their service class (a deploy in
    progress records it at once; until then the row is not ours to load).

    Args:
        flavor: the flavor name; None: every flavor.
        service_uuid: only this service.

    Yields:
        ``ServiceResponse`` rows, hydrated.
    """
    client = Client()
    page_no = 1
    while True:
        page = client.list_services(
            flavor=flavor,
            id=service_uuid,
            sort_by="desc:created",
            hydrate=True,
            page=page_no,
            size=1000,
        )
        yield from (resp for resp in page.items if resp.service_source)
        if page_no >= page.total_pages:
            return
        page_no += 1


def list_services(flavor: str, service_uuid: UUID | None = None) -> list[DeploymentService]:
    """Every row of ``flavor`` (or the one with ``service_uuid``), newest first, as services
    (status as stored); rows that do not load are skipped with a warning.

    Args:
        flavor: the flavor name.
        service_uuid: only this service.

    Returns:
        The services.
    """
    out: list[DeploymentService] = []
    for resp in service_rows(flavor, service_uuid):
        try:
            out.append(service_from_response(resp))
        except (TypeError, ImportError, ValueError) as e:
            logger.warning("Skipping service %s: %s", resp.id, e)
    return out


def load_service(uuid: UUID) -> DeploymentService:
    """Loads a deployment by service id, status read from the backend.

    Args:
        uuid: service id.

    Returns:
        The service.

    Raises:
        DeploymentNotFoundError: no such row, or not one of ours.
    """
    try:
        resp = Client().get_service(uuid)
    except KeyError as e:
        raise DeploymentNotFoundError(f"No deployment with service id {uuid}.") from e
    try:
        svc = service_from_response(resp)
    except TypeError as e:
        raise DeploymentNotFoundError(
            f"Service {uuid} is not a zenml-model-deployers service: {e}"
        ) from e
    svc.update_status()
    return svc
