"""One Inference Endpoint as the Hugging Face double holds it: its states and timed
transitions, the JSON the API answers for it, and the deterministic fake model it serves.

Split from ``hf_double.py`` (the API server, its operations and the serving URLs) by job;
``fake_prediction`` and ``EndpointRecord`` are importable from either module.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zenml_model_deployers.testing.local_server import LocalServer

HEALTH_ROUTE = "/health"


def fake_prediction(task: str | None, repository: str, revision: str | None, inputs: Any) -> Any:
    """What the double's fake model answers for one input (deterministic).

    The answer depends on the task, the repository, the revision and the input, so two
    revisions of one repository give different predictions.

    Args:
        task: the endpoint's task.
        repository: the served repository.
        revision: the served revision.
        inputs: one input (a string for text tasks).

    Returns:
        The JSON the server answers for a single input, shaped like Hugging Face's servers
        (e.g. ``[[{"label": ..., "score": ...}, ...]]`` for text classification).
    """
    text = inputs if isinstance(inputs, str) else json.dumps(inputs, sort_keys=True)
    digest = hashlib.sha256(f"{repository}@{revision}|{text}".encode()).digest()
    if task in ("text-classification", "sentiment-analysis"):
        score = round(0.5 + digest[0] / 512, 4)
        top, other = ("POSITIVE", "NEGATIVE") if digest[1] % 2 else ("NEGATIVE", "POSITIVE")
        return [[{"label": top, "score": score}, {"label": other, "score": round(1 - score, 4)}]]
    if task in ("text-generation", "text2text-generation"):
        return [
            {"generated_text": f"{text} [{repository}@{revision or 'main'}:{digest.hex()[:6]}]"}
        ]
    if task in ("feature-extraction", "sentence-embeddings"):
        return [[round(b / 255, 4) for b in digest[:8]]]
    if task == "summarization":
        return [{"summary_text": f"{text[:20]} [{revision or 'main'}:{digest.hex()[:6]}]"}]
    if task == "translation":
        return [{"translation_text": f"{text[::-1]} [{revision or 'main'}:{digest.hex()[:6]}]"}]
    return {"task": task, "model": f"{repository}@{revision or 'main'}", "digest": digest.hex()[:8]}


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class ServedModel:
    repository: str
    revision: str | None
    task: str | None


@dataclass
class Transition:
    at: float
    state: str
    message: str
    serving: ServedModel | None


@dataclass
class EndpointRecord:
    """What the double holds for one endpoint (a snapshot is returned to tests).

    Attributes:
        namespace: its namespace.
        name: its name.
        state: the Inference Endpoints state (``running``, ``paused``, ...).
        message: the state's message.
        payload: the endpoint's configuration as last sent (create merged with updates).
        secrets: the secret values the endpoint received (tests check delivery).
        serving: (repository, revision) the URL serves now, or None.
        url: its serving URL, once it ran.
        requests: predictions answered.
        history: the states it went through, in order.
    """

    namespace: str
    name: str
    state: str
    message: str
    payload: dict[str, Any]
    secrets: dict[str, str] = field(default_factory=dict)
    serving: tuple[str, str | None] | None = None
    url: str | None = None
    requests: int = 0
    history: list[str] = field(default_factory=list)


class Endpoint:
    """An endpoint's live state; every access advances its timed transitions."""

    def __init__(self, namespace: str, name: str, payload: dict[str, Any], who: str) -> None:
        self.namespace, self.name = namespace, name
        self.payload = payload
        self.secrets: dict[str, str] = dict(payload.get("model", {}).pop("secrets", None) or {})
        self.state, self.message = "pending", "Endpoint waiting to be scheduled"
        self.history = ["pending"]
        self.serving: ServedModel | None = None  # what the URL answers with now
        self.transitions: list[Transition] = []
        self.created_at = self.updated_at = _now_iso()
        self.who = who
        self.server: LocalServer | None = None
        self.ever_ran = False
        self.requests = 0
        self.last_activity = time.monotonic()
        self.deleted = False

    # ----------------------------------------------------------------- model
    def target(self) -> ServedModel:
        m = self.payload["model"]
        return ServedModel(m["repository"], m.get("revision"), m.get("task"))

    def set_state(self, state: str, message: str) -> None:
        if state != self.state:
            self.history.append(state)
        self.state, self.message = state, message
        self.updated_at = _now_iso()
        if state == "running":
            self.ever_ran = True

    def advance(self, now: float, scale_unit: float | None) -> None:
        while self.transitions and self.transitions[0].at <= now:
            t = self.transitions.pop(0)
            self.serving = t.serving
            self.set_state(t.state, t.message)
            if t.state == "running":
                self.last_activity = now
        scaling = self.payload.get("compute", {}).get("scaling", {})
        timeout = scaling.get("scaleToZeroTimeout")
        if (
            scale_unit is not None
            and self.state == "running"
            and not self.transitions
            and scaling.get("minReplica", 1) == 0
            and timeout
            and now - self.last_activity > timeout * scale_unit
        ):
            self.scale_to_zero()

    def scale_to_zero(self) -> None:
        self.serving = None
        self.transitions = []
        self.set_state("scaledToZero", "Endpoint is scaled to zero")

    def raw(self) -> dict[str, Any]:
        """The JSON Inference Endpoints answers for this endpoint."""
        p = self.payload
        m = p["model"]
        status: dict[str, Any] = {
            "createdAt": self.created_at,
            "createdBy": {"id": "0" * 24, "name": self.who},
            "updatedAt": self.updated_at,
            "updatedBy": {"id": "0" * 24, "name": self.who},
            "private": None,
            "state": self.state,
            "message": self.message,
            "readyReplica": 1 if self.serving is not None else 0,
            "targetReplica": 0 if self.state in ("paused", "scaledToZero") else 1,
        }
        if self.ever_ran and self.server is not None:
            status["url"] = self.server.url
        if self.state in ("failed", "updateFailed"):
            status["errorMessage"] = self.message
        return {
            "name": self.name,
            "type": p.get("type", "authenticated"),
            "accountId": None,
            "provider": p.get("provider", {}),
            "healthRoute": HEALTH_ROUTE,
            "compute": p.get("compute", {}),
            "model": {
                "repository": m["repository"],
                "revision": m.get("revision"),
                "task": m.get("task"),
                "framework": m.get("framework"),
                "image": m.get("image", {"huggingface": {}}),
                "env": m.get("env", {}),
                # Like the real API: secret names, never their values.
                "secrets": {k: "********" for k in self.secrets},
            },
            "status": status,
            "tags": p.get("tags", []),
        }
