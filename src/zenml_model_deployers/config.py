"""DeploymentConfig: a deployment's identity, model reference and serving settings.

The config hash identifies a *revision*: it is computed over what changes serving
(model reference + serving settings), never over provenance (pipeline, run, step,
ZenML model version), so re-running a pipeline with an unchanged model is a no-op.
"""

from __future__ import annotations

import hashlib
import json
import re
from enum import StrEnum
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from zenml.services.service import ServiceConfig

from zenml_model_deployers.provenance import PROVENANCE_FIELDS as _PROVENANCE

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class DeployPolicy(StrEnum):
    """What `deploy` does when the deployment exists with another configuration."""

    UPDATE = "update"
    """Roll the new revision out; the old one serves until the new one is ready (default)."""
    REPLACE = "replace"
    """Delete the old revision, then create the new one (an outage between the two)."""
    SIDE_BY_SIDE = "side_by_side"
    """Create a second deployment under a new name; the old one is untouched."""
    FAIL = "fail"
    """Raise DeploymentExistsError."""
    CANARY = "canary"
    """Roll the new revision out in traffic steps, with gates on its metrics at each step:
    promoted after the last step, rolled back at the first failed gate (see CanaryRollout)."""


class CanaryRollout(BaseModel):
    """A progressive rollout (``policy="canary"``): the candidate gets ``steps[i]`` % of
    requests for ``interval`` seconds each; after each bake its metrics must pass every gate.

    The semantics follow Flagger (step weights, an analysis interval, success-rate and latency
    gates) and Argo Rollouts (a failed analysis returns all traffic to the stable revision).
    A gate needs ``min_requests`` requests to the candidate before it may pass or fail: no
    traffic is not a pass (a bake waits up to one more ``interval`` for them, then fails).

    Attributes:
        steps: the candidate's share at each step (percent, increasing; the last one 100).
        interval: bake seconds per step.
        max_error_rate: the candidate's highest acceptable error rate in a step (0-1).
        max_p95_ratio: the candidate's highest acceptable p95 latency, as a multiple of the
            stable revision's in the same step (skipped where the backend reports no latency;
            at 100 % the stable's p95 of the previous step is the reference).
        min_requests: requests the candidate must have answered in a step for a verdict.
    """

    model_config = ConfigDict(extra="forbid")

    steps: list[int] = Field(default_factory=lambda: [10, 50, 100])
    interval: float = Field(default=60.0, gt=0)
    max_error_rate: float = Field(default=0.01, ge=0, le=1)
    max_p95_ratio: float = Field(default=1.5, gt=0)
    min_requests: int = Field(default=20, ge=1)

    @field_validator("steps")
    @classmethod
    def _increasing_to_100(cls, v: list[int]) -> list[int]:
        if not v or any(not 1 <= p <= 100 for p in v):
            raise ValueError(f"steps {v}: each a percentage of traffic, 1-100.")
        if any(b <= a for a, b in zip(v, v[1:], strict=False)) or v[-1] != 100:
            raise ValueError(f"steps {v}: strictly increasing, ending at 100 (e.g. [10, 50, 100]).")
        return v


def derive_deployment_name(text: str) -> str:
    """Turns a model name (or any text) into a DNS-safe deployment name.

    Args:
        text: e.g. "Iris Classifier_v2".

    Returns:
        e.g. "iris-classifier-v2".
    """
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    name = re.sub(r"-{2,}", "-", name)[:63].strip("-")
    return name or "model"


def validate_deployment_name(name: str) -> str:
    """Checks that a deployment name is a DNS label.

    Args:
        name: the candidate.

    Returns:
        The name, unchanged.

    Raises:
        ValueError: with the fix, if it is not DNS-safe.
    """
    if not _DNS_LABEL.match(name):
        raise ValueError(
            f"deployment name {name!r} is not DNS-safe: use 1-63 lowercase letters, digits "
            f"and '-', starting and ending with a letter or digit (e.g. "
            f"{derive_deployment_name(name)!r})."
        )
    return name


class DeployOptions(BaseModel):
    """Options of one deploy call, validated before anything starts."""

    model_config = ConfigDict(extra="forbid")

    policy: DeployPolicy = DeployPolicy.UPDATE
    timeout: float = Field(default=300.0, gt=0, description="seconds to wait for readiness")
    canary_percent: int | None = Field(
        default=None,
        ge=1,
        le=99,
        description="keep the serving revision and send this share of requests to the new one",
    )
    rollout: CanaryRollout | None = Field(
        default=None, description="steps and gates of policy 'canary' (default: CanaryRollout())"
    )

    @model_validator(mode="after")
    def _canary_updates(self) -> DeployOptions:
        if self.policy == DeployPolicy.CANARY:
            if self.canary_percent is not None:
                raise ValueError(
                    "policy 'canary' walks the rollout's steps itself: give rollout=... "
                    "(steps, interval, gates), not canary_percent."
                )
            if self.rollout is None:
                self.rollout = CanaryRollout()
        elif self.rollout is not None:
            raise ValueError(f"rollout=... needs policy 'canary' (got {self.policy.value!r}).")
        if self.canary_percent is not None and self.policy != DeployPolicy.UPDATE:
            raise ValueError(
                f"canary_percent needs policy 'update' (got {self.policy.value!r}): a canary "
                "runs beside the serving revision of the same deployment."
            )
        return self

    @field_validator("policy", mode="before")
    @classmethod
    def _known_policy(cls, v: Any) -> Any:
        if isinstance(v, str) and v not in {p.value for p in DeployPolicy}:
            raise ValueError(
                f"unknown policy {v!r}: use one of {', '.join(p.value for p in DeployPolicy)}."
            )
        return v


class FieldsByName:
    """``obj["field"]`` on a pydantic model: how ZenML's docs read a service's config and
    status (``services[0].config["model_name"]``, ``services[0].status["prediction_url"]``)."""

    def __getitem__(self, key: str) -> Any:
        """A field by name.

        Args:
            key: a field name.

        Returns:
            The field's value.

        Raises:
            KeyError: no such field.
        """
        if key not in getattr(type(self), "model_fields", {}):
            raise KeyError(key)
        return getattr(self, key)


class DeploymentConfig(FieldsByName, ServiceConfig):
    """Base configuration of every deployment.

    Attributes:
        deployment_name: stable DNS-safe identity; derived from `model_name` if empty.
        model_uri: the model reference the backend serves.
        health_path: path of the health request that says "ready".
        health_method: HTTP method of the health request.
        smoke_input: optional example input; when set, a prediction must succeed before ready.
        env: environment of the serving process; values may be `{{secret.key}}` references.
        pipeline_run_id: provenance: the run that deployed this revision.
        run_name: provenance: that run's name.
    """

    # Fields that say where a config came from, not how it serves: excluded from the hash.
    PROVENANCE_FIELDS: ClassVar[frozenset[str]] = _PROVENANCE
    # Where a config class was defined before it moved (``module.Class``; it stays importable
    # there). ZenML stores a config's source path as its ``type`` and validates it as a
    # literal, so a config saved under a former path is read as this class (set per class:
    # not inherited).
    FORMER_SOURCES: ClassVar[tuple[str, ...]] = ()

    deployment_name: str = ""
    model_uri: str = ""
    health_path: str = "/ping"
    health_method: str = "GET"
    smoke_input: Any = None
    env: dict[str, str] = Field(default_factory=dict)
    pipeline_run_id: str = ""
    run_name: str = ""

    @model_validator(mode="before")
    @classmethod
    def _derive_names(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            dn = data.get("deployment_name") or derive_deployment_name(
                data.get("model_name") or data.get("name") or ""
            )
            data["deployment_name"] = dn
            if not data.get("name"):
                data["name"] = dn
        return data

    @model_validator(mode="before")
    @classmethod
    def _read_former_source(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("type") in cls.__dict__.get("FORMER_SOURCES", ()):
            data = {**data, "type": f"{cls.__module__}.{cls.__qualname__}"}
        return data

    @field_validator("deployment_name")
    @classmethod
    def _dns_safe(cls, v: str) -> str:
        return validate_deployment_name(v)

    @field_validator("health_method")
    @classmethod
    def _method(cls, v: str) -> str:
        v = v.upper()
        if v not in {"GET", "HEAD", "POST"}:
            raise ValueError(f"health_method {v!r} must be GET, HEAD or POST.")
        return v

    def serving_fields(self) -> dict[str, Any]:
        """The part of the config that changes serving (what the hash covers).

        Returns:
            A JSON-able dict.
        """
        return {
            k: v for k, v in self.model_dump(mode="json").items() if k not in self.PROVENANCE_FIELDS
        }

    def config_hash(self) -> str:
        """The revision identity: a hash of the canonical JSON of the serving fields.

        Returns:
            16 hex characters.
        """
        canonical = json.dumps(self.serving_fields(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]
