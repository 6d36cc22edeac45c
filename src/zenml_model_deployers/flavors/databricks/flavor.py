"""The `zmd-databricks` flavor: cheap to import (no databricks-sdk or mlflow import here)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import ConfigDict, model_validator
from zenml.utils.secret_utils import SecretField

from zenml_model_deployers.deployer import BaseDeployerConfig, BaseDeployerFlavor
from zenml_model_deployers.secrets import is_secret_reference, references_only

FLAVOR_NAME = "zmd-databricks"
CREDENTIALS_HINT = (
    "store the credential as a ZenML secret and pass its reference: "
    "`zenml secret create databricks -i` (key `token`, the personal access token at a prompt "
    "that does not echo), then "
    "`zenml model-deployer register dbx --flavor=zmd-databricks --host=https://<workspace> "
    "--token='{{databricks.token}}'` (or --client_id=... "
    "--client_secret='{{databricks.client_secret}}' for a service principal)."
)
# The credential fields, each with an example of the secret reference it takes.
CREDENTIAL_FIELDS = {key: f"{{{{databricks.{key}}}}}" for key in ("token", "client_secret")}


class DatabricksDeployerConfig(BaseDeployerConfig):
    """Settings of a `zmd-databricks` model deployer component.

    Authentication is `databricks-sdk`'s unified auth with either a personal access token or
    an OAuth service principal (machine-to-machine); both secrets are ZenML secret references.

    Attributes:
        host: the workspace URL, e.g. ``https://adb-123.4.azuredatabricks.net``.
        token: a ZenML secret reference to a personal access token.
        client_id: an OAuth service principal's client id (plain or a secret reference).
        client_secret: a ZenML secret reference to that service principal's secret.
        registry_uri: where the step registers model objects (``databricks-uc``: Unity
            Catalog; any MLflow registry URI, e.g. a local one standing in for it in tests).
        tracking_uri: the MLflow tracking server the registering run is logged to.
        catalog: Unity Catalog catalog for model objects given without a registered name.
        schema_name: the schema for those.
        default_timeout: seconds a deploy waits when the step gives no ``timeout``
            (endpoints take minutes to become ready).
    """

    model_config = ConfigDict(hide_input_in_errors=True)

    host: str
    token: str | None = SecretField(default=None)
    client_id: str | None = None
    client_secret: str | None = SecretField(default=None)
    registry_uri: str = "databricks-uc"
    tracking_uri: str = "databricks"
    catalog: str = ""
    schema_name: str = ""
    default_timeout: float = 1800.0

    _credentials_are_references = references_only(
        "zmd-databricks model deployer", CREDENTIAL_FIELDS, CREDENTIALS_HINT
    )

    @model_validator(mode="after")
    def _one_way_to_authenticate(self) -> DatabricksDeployerConfig:
        # The values as given (secret references unresolved): reading the attributes would
        # fetch the secrets, so configuring would need them to exist already.
        raw = self.__dict__
        token, client_id, client_secret = (
            raw.get(k) for k in ("token", "client_id", "client_secret")
        )
        sp = client_id is not None or client_secret is not None
        if token is not None and sp:
            raise ValueError(
                "give either `token` (personal access token) or `client_id` + "
                "`client_secret` (service principal), not both."
            )
        if sp and (client_id is None or client_secret is None):
            raise ValueError("a service principal needs both `client_id` and `client_secret`.")
        if token is None and not sp:
            raise ValueError(f"no Databricks credentials: {CREDENTIALS_HINT}")
        host = str(raw.get("host", ""))
        if not is_secret_reference(host) and not host.startswith(("https://", "http://")):
            raise ValueError(f"host {host!r} must be a URL such as https://<workspace>.")
        return self


class DatabricksDeployerFlavor(BaseDeployerFlavor):
    """Serves Unity Catalog models on Databricks Model Serving endpoints, updated in place."""

    FLAVOR_NAME: ClassVar[str] = FLAVOR_NAME
    DISPLAY_NAME: ClassVar[str] = "Databricks Model Serving (zenml-model-deployers)"
    LOGO: ClassVar[str] = "databricks"
    CONFIG_CLASS: ClassVar[type[BaseDeployerConfig]] = DatabricksDeployerConfig
    IMPLEMENTATION: ClassVar[str] = (
        "zenml_model_deployers.flavors.databricks.deployer.DatabricksDeployer"
    )
