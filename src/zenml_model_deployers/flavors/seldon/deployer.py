"""The `zmd-seldon` model deployer."""

from __future__ import annotations

from typing import ClassVar

from zenml.model_deployers.base_model_deployer import BaseModelDeployerFlavor

from zenml_model_deployers.flavors.seldon.flavor import SeldonDeployerFlavor
from zenml_model_deployers.flavors.seldon.service import SeldonDeploymentService
from zenml_model_deployers.kube.deployer import KubeDeployer


class SeldonDeployer(KubeDeployer):
    """Deploys models to Seldon Core on Kubernetes; updates them in place.

    On top of the guarantees of :class:`BaseDeployer`: one ``Model`` per deployment, named
    after it (same name and URL for every revision); an update patches it (never replaces it)
    and a version Seldon cannot load is rolled back to the previous spec; ``stop`` unloads the
    model and keeps the record, ``start`` loads it again; ``delete`` removes every resource
    and Secret the deployment made and nothing else; a resource of the same name that we do
    not own is never touched. A model object is saved as ``model.joblib`` (MLServer's sklearn
    runtime layout).
    """

    NAME: ClassVar[str] = "Seldon Core (zmd)"
    FLAVOR: ClassVar[type[BaseModelDeployerFlavor]] = SeldonDeployerFlavor
    SERVICE_CLASS: ClassVar[type[SeldonDeploymentService]] = SeldonDeploymentService
    # The component's server and Seldon API, where the config leaves them unset.
    COMPONENT_SETTINGS: ClassVar[tuple[str, ...]] = ("server", "seldon_api")
