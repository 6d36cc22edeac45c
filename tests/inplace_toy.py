"""A minimal in-place flavor over an in-memory backend, to test the shared lifecycle logic.

The backend object moves like a remote serving API: an applied target is "updating" for a
short delay (longer for a model URI containing ``slow``), then serves it -- or reports the change failed when its model URI contains
``fail`` (with the backend's own message). Predictions pick a revision by the routes, so a
canary's split is observable. The real remote flavors (Databricks, Hugging Face) run the
same base against offline doubles of their real APIs; this one isolates the base's logic.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Generator
from datetime import UTC, datetime
from typing import Any, ClassVar
from uuid import uuid4

from zenml.enums import ServiceState, StackComponentType
from zenml.models.v2.misc.service import ServiceType

from zenml_model_deployers.config import DeploymentConfig
from zenml_model_deployers.deployer import BaseDeployer, BaseDeployerConfig, BaseDeployerFlavor
from zenml_model_deployers.remote import BackendState, InPlaceDeploymentService, ServingTarget

FLAVOR = "zmd-toy"
DELAY = 0.15
SLOW_DELAY = 3.0  # for model URIs containing "slow"


class ToyObject:
    """One deployment's object on the toy backend."""

    def __init__(self) -> None:
        self.serving: dict[str, int] = {}  # model_uri -> percent
        self.pending: dict[str, int] | None = None
        self.ready_at = 0.0
        self.failed_message = ""
        self.applies: list[dict[str, int]] = []


BACKEND: dict[str, ToyObject] = {}
LOCK = threading.Lock()


def _routes(target: ServingTarget) -> dict[str, int]:
    if target.candidate is None or target.candidate_percent == 0:
        return {target.stable.model_uri: 100}
    return {
        target.stable.model_uri: 100 - target.candidate_percent,
        target.candidate.model_uri: target.candidate_percent,
    }


class ToyConfig(DeploymentConfig):
    """A toy revision: its model URI is all it serves."""


class ToyService(InPlaceDeploymentService):
    """A deployment on the toy backend."""

    SERVICE_TYPE: ClassVar[ServiceType] = ServiceType(
        name="zmd-toy-deployment", type="model-serving", flavor=FLAVOR, description="toy"
    )
    FLAVOR: ClassVar[str] = FLAVOR
    BACKEND: ClassVar[str] = "the toy backend"
    FIRST_POLL: ClassVar[float] = 0.02
    MAX_POLL: ClassVar[float] = 0.05
    SUPPORTS_TRAFFIC_SPLIT: ClassVar[bool] = True

    config: ToyConfig

    def apply_target(self, target: ServingTarget, previous: ServingTarget | None) -> None:
        with LOCK:
            obj = BACKEND.setdefault(self.deployment_name, ToyObject())
            obj.pending = _routes(target)
            obj.applies.append(dict(obj.pending))
            slow = any("slow" in m for m in obj.pending)
            obj.ready_at = time.monotonic() + (SLOW_DELAY if slow else DELAY)
            obj.failed_message = ""
        self.status.url = f"toy://{self.deployment_name}"

    def read_backend(self) -> BackendState:
        with LOCK:
            obj = BACKEND.get(self.deployment_name)
            if obj is None:
                return BackendState(state="MISSING", gone=True)
            if obj.pending is not None and time.monotonic() >= obj.ready_at:
                bad = [m for m in obj.pending if "fail" in m]
                if bad:
                    obj.failed_message = f"Model {bad[0]} could not be loaded (planted)."
                else:
                    obj.serving = obj.pending
                obj.pending = None
            if obj.failed_message:
                return BackendState(state="UPDATE_FAILED", message=obj.failed_message, failed=True)
            if obj.pending is not None:
                return BackendState(state="IN_PROGRESS", raw=dict(obj.serving))
            return BackendState(state="READY", raw=dict(obj.serving))

    def serves(self, state: BackendState, target: ServingTarget) -> bool:
        return state.state == "READY" and state.raw == _routes(target)

    def predict(self, data: Any, timeout: float = 60.0) -> Any:
        with LOCK:
            serving = dict(BACKEND[self.deployment_name].serving)
        pick = random.uniform(0, 100)
        acc = 0.0
        for model, pct in serving.items():
            acc += pct
            if pick < acc:
                return model
        return next(iter(serving))

    def start_backend(self, timeout: float) -> None:
        self.mark_ready()

    def stop_backend(self, timeout: float) -> None:
        self.admin_state = ServiceState.INACTIVE
        self.status.update_state(ServiceState.INACTIVE, "")

    def delete_backend(self, timeout: float) -> None:
        with LOCK:
            BACKEND.pop(self.deployment_name, None)

    def check_status(self) -> tuple[ServiceState, str]:
        if self.deployment_name not in BACKEND:
            return ServiceState.INACTIVE, "gone"
        return self.status.state, ""

    def get_logs(self, follow: bool = False, tail: int | None = None) -> Generator[str, bool, None]:
        yield from ()


class ToyFlavor(BaseDeployerFlavor):
    """The toy flavor."""

    FLAVOR_NAME: ClassVar[str] = FLAVOR
    IMPLEMENTATION: ClassVar[str] = "inplace_toy.ToyDeployer"


class ToyDeployer(BaseDeployer):
    """The toy deployer."""

    FLAVOR: ClassVar[type[BaseDeployerFlavor]] = ToyFlavor
    SERVICE_CLASS: ClassVar[type[ToyService]] = ToyService


def toy_deployer() -> ToyDeployer:
    """An unregistered toy deployer (the lifecycle needs only the service store).

    Returns:
        The deployer.
    """
    now = datetime.now(UTC)
    return ToyDeployer(
        name="toy",
        id=uuid4(),
        config=BaseDeployerConfig(default_timeout=5),
        flavor=FLAVOR,
        type=StackComponentType.MODEL_DEPLOYER,
        user=None,
        created=now,
        updated=now,
    )
