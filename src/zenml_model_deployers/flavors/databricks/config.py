"""The deployment config of `zmd-databricks`: which Unity Catalog model version an endpoint
serves, and how.

Cheap to import (databricks-sdk only where a validator can use it): ZenML loads it to read
stored services.
"""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from zenml_model_deployers.config import DeploymentConfig
from zenml_model_deployers.flavors.databricks.flavor import CREDENTIAL_FIELDS, CREDENTIALS_HINT
from zenml_model_deployers.secrets import references_only

_MODEL_URI = re.compile(r"^models:/(?P<name>[^/\s]+)/(?P<version>\d+)$")
_ENTITY_SAFE = re.compile(r"[^A-Za-z0-9_-]+")
QUERY_FORMATS = ("auto", "dataframe_split", "dataframe_records", "instances", "inputs", "messages")
WORKLOAD_SIZES = ("Small", "Medium", "Large")


def model_uri_for(name: str, version: str | int) -> str:
    """The model reference of a Unity Catalog model version.

    Args:
        name: ``catalog.schema.model``.
        version: the version.

    Returns:
        ``models:/catalog.schema.model/<version>``.
    """
    return f"models:/{name}/{version}"


class InferenceTable(BaseModel):
    """The AI gateway's inference table: requests and responses logged to Unity Catalog.

    Attributes:
        catalog_name: the catalog of the table.
        schema_name: its schema.
        table_name_prefix: prefix of the table's name (Databricks appends ``_payload``).
    """

    model_config = ConfigDict(extra="forbid")

    catalog_name: str
    schema_name: str
    table_name_prefix: str = ""


class DatabricksDeploymentConfig(DeploymentConfig):
    """How to serve a Unity Catalog model version on a Model Serving endpoint.

    Attributes:
        model_uri: ``models:/catalog.schema.model/<version>``.
        workload_size: ``Small``, ``Medium`` or ``Large`` (concurrency per served entity).
        workload_type: e.g. ``CPU``, ``GPU_SMALL`` (None: Databricks' default, CPU).
        scale_to_zero_enabled: an idle endpoint scales to zero (and costs nothing).
        env: the served entity's environment variables; values may be Databricks
            ``{{secrets/scope/key}}`` references (sent as they are) or ZenML secret references
            ``{{secret.key}}`` (stored in the deployment's Databricks secret scope and sent as
            a ``{{secrets/...}}`` reference: no value in the endpoint's config).
        tags: the endpoint's tags (propagated to billing logs).
        inference_table: log requests and responses to this Unity Catalog table (AI gateway).
        query_format: the input form ``predict`` sends (``auto``: from the data's type).
        host: the workspace URL (default: the component's).
        token: secret reference to a personal access token (default: the component's).
        client_id: a service principal's client id (default: the component's).
        client_secret: secret reference to its secret (default: the component's).
    """

    # Where the endpoint lives and the credentials say how to reach it, not what it serves.
    PROVENANCE_FIELDS: ClassVar[frozenset[str]] = DeploymentConfig.PROVENANCE_FIELDS | {
        "host",
        "token",
        "client_id",
        "client_secret",
        "query_format",
    }
    FORMER_SOURCES: ClassVar[tuple[str, ...]] = (
        "zenml_model_deployers.flavors.databricks.service.DatabricksDeploymentConfig",
    )
    model_config = ConfigDict(hide_input_in_errors=True)

    health_path: str = ""
    workload_size: str = "Small"
    workload_type: str | None = None
    scale_to_zero_enabled: bool = True
    tags: dict[str, str] = Field(default_factory=dict)
    inference_table: InferenceTable | None = None
    query_format: Literal[
        "auto", "dataframe_split", "dataframe_records", "instances", "inputs", "messages"
    ] = "auto"
    host: str = ""
    token: str | None = None
    client_id: str | None = None
    client_secret: str | None = None

    _credentials_are_references = references_only(
        "zmd-databricks deployment", CREDENTIAL_FIELDS, CREDENTIALS_HINT
    )

    @field_validator("model_uri")
    @classmethod
    def _uc_model_version(cls, v: str) -> str:
        if v in ("", "-") or _MODEL_URI.match(v):
            return v
        raise ValueError(
            f"model_uri {v!r} is not a Unity Catalog model version: use "
            "'models:/catalog.schema.model/<version>' (or registered_model_name= and "
            "model_version= in the step)."
        )

    @field_validator("workload_size")
    @classmethod
    def _known_size(cls, v: str) -> str:
        if v not in WORKLOAD_SIZES:
            raise ValueError(f"workload_size {v!r} must be one of {', '.join(WORKLOAD_SIZES)}.")
        return v

    @field_validator("workload_type")
    @classmethod
    def _known_type(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            from databricks.sdk.service.serving import ServingModelWorkloadType
        except ImportError:
            return v
        known = [t.value for t in ServingModelWorkloadType]
        if v not in known:
            raise ValueError(f"workload_type {v!r} is not one of {', '.join(known)}.")
        return v

    @property
    def entity_name(self) -> str:
        """The Unity Catalog model's full name (``catalog.schema.model``)."""
        m = _MODEL_URI.match(self.model_uri)
        return m.group("name") if m else ""

    @property
    def entity_version(self) -> str:
        """The served model version."""
        m = _MODEL_URI.match(self.model_uri)
        return m.group("version") if m else ""

    @property
    def served_entity_name(self) -> str:
        """The served entity's name: model, version and revision, so a canary's two entities
        (even of one version with other settings) never share a name."""
        short = _ENTITY_SAFE.sub("-", self.entity_name.rsplit(".", 1)[-1])[:40].strip("-")
        return f"{short or 'model'}-{self.entity_version}-{self.config_hash()[:6]}"

    def model_label(self) -> str:
        """``catalog.schema.model v<version>`` for messages.

        Returns:
            A string.
        """
        return f"{self.entity_name} v{self.entity_version}"
