"""The KServe part of the simulated cluster: a controller that reconciles ``InferenceService``s
like KServe's (the gateway that routes their hosts is ``kserve_gateway.py``).

What it models (and the flavor relies on):

- ``metadata.generation`` (kept by the simulated API server) and ``status.observedGeneration``
  per reconcile; ``Ready``/``PredictorReady`` conditions; ``status.url``
  (``http://{name}.{namespace}.example.com``, KServe's default domain template);
  ``status.deploymentMode`` (the ``serving.kserve.io/deploymentMode`` annotation, else the
  cluster's default).
- Serverless: every change of the predictor creates a revision (``{name}-predictor-0000N``);
  the route moves to it only once it is ready (the old revision serves until then); with
  ``canaryTrafficPercent`` the new revision gets that share and the previous rolled-out
  revision (``latestRolledoutRevision``, tag ``prev``) the rest; without it the latest ready
  revision takes 100 % and becomes the rolled-out one. ``status.components.predictor`` says so
  (``traffic``, ``latestCreatedRevision``, ``latestReadyRevision``, ``latestRolledoutRevision``,
  ``previousRolledoutRevision``).
- Standard (RawDeployment): ``canaryTrafficPercent`` is ignored (kserve#5335: the new spec takes
  all traffic once ready); ``spec.canary`` entries (KServe >= 0.20) each get their share,
  reported in ``status.canaryStatuses``.
- ``serving.kserve.io/stop: "true"``: the workloads go away (the model is unloaded), the
  ``Stopped`` condition is True and ``Ready`` False; removing it brings the model back.
- A model that fails to load: ``Ready=False`` (``RevisionFailed`` in Serverless,
  ``ModelLoadFailed`` in Standard) with the model server's own error, and
  ``modelStatus.lastFailureInfo``; the previous revision keeps the traffic.

Predictions: sklearn, xgboost, lightgbm and mlflow models load into the cluster's real MLServer,
with the runtime class ``kserve-mlserver`` sets for their format (``mlserver.runtime_settings``). MLServer speaks V2
only, so V1 requests (``{"instances": ...}``) are translated by the gateway to V2 and the
answer back to ``{"predictions": ...}`` (KServe's own sklearn server, which speaks V1, is the
`kserve` package we never install). ``huggingface`` models run the vLLM stand-in (a real small
LLM on CPU) behind the Hugging Face server's ``/openai/v1/...`` routes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zenml_model_deployers.packaging.native import MLSERVER_RUNTIMES
from zenml_model_deployers.testing.kube_cluster.controller import SimulatedController, now
from zenml_model_deployers.testing.kube_cluster.crds import KINDS
from zenml_model_deployers.testing.kube_cluster.kserve_gateway import (
    DOMAIN,
    KServeGateway,
    LLMServer,
    QueueProxyMetrics,
    Route,
    booster_objective,
    pick_runtime,
    runtime_error,
)
from zenml_model_deployers.testing.kube_cluster.mlserver import LoadedModel

STOP_ANNOTATION = "serving.kserve.io/stop"
MODE_ANNOTATION = "serving.kserve.io/deploymentMode"


@dataclass
class Revision:
    """A revision of an InferenceService's predictor (Serverless) or a Standard workload."""

    name: str
    digest: str
    backend: LoadedModel | LLMServer | None = None
    error: str = ""


@dataclass
class IsvcState:
    """What the controller keeps about one InferenceService."""

    uid: str
    counter: int = 0
    revisions: list[Revision] = field(default_factory=list)
    latest_rolled_out: str = ""
    previous_rolled_out: str = ""
    # Serverless: (revision name, percent, tag)
    traffic: list[tuple[str, int, str]] = field(default_factory=list)
    # Standard: the main workload and the canaries with their share.
    main: Revision | None = None
    canaries: list[tuple[Revision, int]] = field(default_factory=list)
    seen: tuple[int, bool] = (0, False)


@dataclass(eq=False)
class KServeController(SimulatedController):
    """Reconciles InferenceServices; the routes it sets feed the gateway.

    Attributes:
        gateway: the gateway whose routes it sets.
        root: where the model servers' logs go.
        default_mode: the cluster's default deployment mode (KServe's
            ``inferenceservice-config``): ``Serverless`` or ``Standard``.
        states: InferenceService -> what the controller keeps about it.
    """

    gateway: KServeGateway = field(kw_only=True)
    root: Path = field(kw_only=True)
    default_mode: str = field(default="Serverless", kw_only=True)
    states: dict[str, IsvcState] = field(default_factory=dict)

    @property
    def queue_proxy(self) -> QueueProxyMetrics:
        """What the Serverless revisions' queue-proxies counted (a Prometheus scrapes it)."""
        return self.gateway.queue_proxy

    # ----------------------------------------------------------------- reconcile
    def reconcile(self, custom: Any, core: Any) -> None:
        """One pass over the namespace's InferenceServices.

        Args:
            custom: ``CustomObjectsApi`` (as the controller).
            core: ``CoreV1Api``.
        """
        items = self.installed_items(custom, "inferenceservices")
        present = set()
        for isvc in items:
            meta = isvc.get("metadata") or {}
            name = meta["name"]
            present.add(name)
            state = self.states.get(name)
            if state is None or state.uid != meta.get("uid"):
                if state is not None:
                    self._drop(name)
                state = self.states[name] = IsvcState(uid=str(meta.get("uid")))
            gen = int(meta.get("generation") or 1)
            stop = (meta.get("annotations") or {}).get(STOP_ANNOTATION) == "true"
            if state.seen == (gen, stop):
                continue
            self._reconcile_one(custom, core, isvc, state, gen, stop)
        for name in [n for n in self.states if n not in present]:
            self._drop(name)

    def _drop(self, name: str) -> None:
        state = self.states.pop(name)
        with self.gateway.lock:
            self.gateway.routes.pop(self.gateway.host(name), None)
        for rev in [*state.revisions, *([state.main] if state.main else [])] + [
            r for r, _ in state.canaries
        ]:
            self._release(rev)

    def _reconcile_one(
        self,
        custom: Any,
        core: Any,
        isvc: dict[str, Any],
        state: IsvcState,
        gen: int,
        stop: bool,
    ) -> None:
        meta = isvc["metadata"]
        name = meta["name"]
        spec = isvc.get("spec") or {}
        mode = (meta.get("annotations") or {}).get(MODE_ANNOTATION) or self.default_mode
        base = {"url": f"http://{self.gateway.host(name)}", "deploymentMode": mode}
        if stop:
            with self.gateway.lock:
                self.gateway.routes.pop(self.gateway.host(name), None)
            for rev in state.revisions:
                self._release(rev)
            state.traffic = []
            if state.main is not None:
                self._release(state.main)
            for rev, _ in state.canaries:
                self._release(rev)
            state.main, state.canaries = None, []
            state.revisions = [r for r in state.revisions if r.backend is not None]
            self._set_status(
                custom,
                name,
                {
                    **base,
                    "observedGeneration": gen,
                    "conditions": _conds(
                        ("Ready", "False", "Stopped", "The InferenceService is stopped"),
                        ("PredictorReady", "False", "Stopped", "The predictor is stopped"),
                        ("Stopped", "True", "", ""),
                    ),
                },
            )
            state.seen = (gen, stop)
            return
        if state.seen[1]:
            # Coming back from a stop: every workload starts again.
            state.revisions, state.traffic, state.main, state.canaries = [], [], None, []
            state.latest_rolled_out = state.previous_rolled_out = ""
        pred = spec.get("predictor") or {}
        self._set_status(
            custom,
            name,
            {
                **base,
                "observedGeneration": gen,
                "conditions": _conds(
                    ("Ready", "Unknown", "Deploying", "the predictor is rolling out"),
                    ("PredictorReady", "Unknown", "Deploying", "the predictor is rolling out"),
                    ("Stopped", "False", "", ""),
                ),
                "modelStatus": {
                    "transitionStatus": "InProgress",
                    "states": {"activeModelState": "Loading", "targetModelState": "Loaded"},
                    "lastFailureInfo": None,
                },
            },
            merge_components=True,
        )
        if mode == "Serverless":
            status = self._serverless(core, name, pred, state)
        else:
            status = self._standard(core, name, spec, pred, state)
        if self._moved(custom, name, gen, stop):
            return  # the spec changed meanwhile: the next pass reconciles it
        self._set_status(custom, name, {**base, "observedGeneration": gen, **status})
        state.seen = (gen, stop)

    def _moved(self, custom: Any, name: str, gen: int, stop: bool) -> bool:
        from kubernetes.client.exceptions import ApiException

        group, version, _, _ = KINDS["inferenceservices"]
        try:
            latest = custom.get_namespaced_custom_object(
                group, version, self.namespace, "inferenceservices", name
            )
        except ApiException:
            return True
        meta = latest.get("metadata") or {}
        now_stop = (meta.get("annotations") or {}).get(STOP_ANNOTATION) == "true"
        return int(meta.get("generation") or 1) != gen or now_stop != stop

    # ----------------------------------------------------------------- Serverless
    def _serverless(
        self, core: Any, name: str, pred: dict[str, Any], state: IsvcState
    ) -> dict[str, Any]:
        template = {k: v for k, v in pred.items() if k != "canaryTrafficPercent"}
        digest = _digest(template)
        latest = state.revisions[-1] if state.revisions else None
        if latest is None or latest.digest != digest:
            state.counter += 1
            latest = Revision(f"{name}-predictor-{state.counter:05d}", digest)
            state.revisions.append(latest)
            self._load(core, name, latest, pred)
        ready_revs = [r for r in state.revisions if r.backend is not None]
        latest_ready = ready_revs[-1].name if ready_revs else ""
        if latest.error:
            conditions = _conds(
                (
                    "Ready",
                    "False",
                    "RevisionFailed",
                    f'Revision "{latest.name}" failed with message: {latest.error}.',
                ),
                (
                    "PredictorReady",
                    "False",
                    "RevisionFailed",
                    f'Revision "{latest.name}" failed with message: {latest.error}.',
                ),
                ("Stopped", "False", "", ""),
            )
            return {
                "conditions": conditions,
                "components": {
                    "predictor": self._component(name, state, latest.name, latest_ready)
                },
                "modelStatus": _model_status(False, latest.error, latest.name),
            }
        ctp = pred.get("canaryTrafficPercent")
        if ctp is not None and state.latest_rolled_out and state.latest_rolled_out != latest.name:
            state.traffic = [
                (latest.name, int(ctp), "latest"),
                (state.latest_rolled_out, 100 - int(ctp), "prev"),
            ]
        else:
            state.traffic = [(latest.name, 100, "latest")]
            if state.latest_rolled_out != latest.name:
                state.previous_rolled_out = state.latest_rolled_out
                state.latest_rolled_out = latest.name
        serving = {r for r, _, _ in state.traffic}
        by_name = {r.name: r for r in state.revisions}
        routed = [
            (r, by_name[r].backend, pct)
            for r, pct, _ in state.traffic
            if by_name.get(r) is not None and by_name[r].backend is not None
        ]
        backends = [(b, pct) for _, b, pct in routed]
        with self.gateway.lock:
            self.gateway.routes[self.gateway.host(name)] = Route(
                name,
                backends,  # type: ignore[arg-type]
                [r for r, _, _ in routed],
            )
        for rev in state.revisions:
            if rev.name not in serving:
                self._release(rev, drain=True)
        state.revisions = [r for r in state.revisions if r.name in serving or r is latest]
        return {
            "conditions": _conds(
                ("Ready", "True", "", ""),
                ("PredictorReady", "True", "", ""),
                ("IngressReady", "True", "", ""),
                ("Stopped", "False", "", ""),
            ),
            "components": {"predictor": self._component(name, state, latest.name, latest_ready)},
            "modelStatus": _model_status(True, "", latest.name),
        }

    def _component(
        self, name: str, state: IsvcState, latest_created: str, latest_ready: str
    ) -> dict[str, Any]:
        out: dict[str, Any] = {
            "url": f"http://{name}-predictor.{self.namespace}.{DOMAIN}",
            "latestCreatedRevision": latest_created,
            "latestReadyRevision": latest_ready,
            "traffic": [
                {
                    "revisionName": r,
                    "percent": pct,
                    "tag": tag,
                    "latestRevision": False,
                    "configurationName": f"{name}-predictor",
                }
                for r, pct, tag in state.traffic
            ],
        }
        if state.latest_rolled_out:
            out["latestRolledoutRevision"] = state.latest_rolled_out
        if state.previous_rolled_out:
            out["previousRolledoutRevision"] = state.previous_rolled_out
        return out

    # ----------------------------------------------------------------- Standard
    def _standard(
        self,
        core: Any,
        name: str,
        spec: dict[str, Any],
        pred: dict[str, Any],
        state: IsvcState,
    ) -> dict[str, Any]:
        # canaryTrafficPercent does nothing in this mode (kserve#5335).
        template = {k: v for k, v in pred.items() if k != "canaryTrafficPercent"}
        loaded = {r.digest: r for r in [state.main, *(c for c, _ in state.canaries)] if r}
        main = self._standard_workload(core, name, template, loaded, "predictor")
        canaries: list[tuple[Revision, int]] = []
        for i, entry in enumerate(spec.get("canary") or []):
            c_pred = entry.get("predictor") or {}
            rev = self._standard_workload(core, name, c_pred, loaded, f"canary-{i}")
            canaries.append((rev, int(entry.get("trafficPercent") or 0)))
        failed = [r for r in [main, *(c for c, _ in canaries)] if r.error]
        if failed:
            keep = {id(r) for r in [state.main, *(c for c, _ in state.canaries)] if r}
            for r in [main, *(c for c, _ in canaries)]:
                if id(r) not in keep:
                    self._release(r)
            msg = failed[0].error
            return {
                "conditions": _conds(
                    ("Ready", "False", "ModelLoadFailed", msg),
                    ("PredictorReady", "False", "ModelLoadFailed", msg),
                    ("Stopped", "False", "", ""),
                ),
                "modelStatus": _model_status(False, msg, failed[0].name),
                "canaryStatuses": self._canary_statuses(name, state.canaries),
            }
        old = [r for r in [state.main, *(c for c, _ in state.canaries)] if r]
        state.main, state.canaries = main, canaries
        rest = 100 - sum(p for _, p in canaries)
        backends = [(main.backend, rest)] + [(c.backend, p) for c, p in canaries]
        with self.gateway.lock:
            self.gateway.routes[self.gateway.host(name)] = Route(name, backends)  # type: ignore[arg-type]
        kept = {id(main), *(id(c) for c, _ in canaries)}
        for r in old:
            if id(r) not in kept:
                self._release(r, drain=True)
        out: dict[str, Any] = {
            "conditions": _conds(
                ("Ready", "True", "", ""),
                ("PredictorReady", "True", "", ""),
                ("Stopped", "False", "", ""),
            ),
            "components": {"predictor": {"url": f"http://{name}-predictor.{self.namespace}.svc"}},
            "modelStatus": _model_status(True, "", main.name),
        }
        if canaries:
            out["canaryStatuses"] = self._canary_statuses(name, canaries)
        else:
            out["canaryStatuses"] = None
        return out

    def _standard_workload(
        self,
        core: Any,
        name: str,
        pred: dict[str, Any],
        loaded: dict[str, Revision],
        role: str,
    ) -> Revision:
        digest = _digest(pred)
        if digest in loaded and loaded[digest].backend is not None:
            return loaded[digest]
        rev = Revision(f"{name}-{role}-{digest[:6]}", digest)
        self._load(core, name, rev, pred)
        return rev

    @staticmethod
    def _canary_statuses(name: str, canaries: list[tuple[Revision, int]]) -> list[dict[str, Any]]:
        return [
            {
                "name": f"{name}-canary-{i}",
                "ready": rev.backend is not None and not rev.error,
                "trafficPercent": pct,
            }
            for i, (rev, pct) in enumerate(canaries)
        ]

    # ----------------------------------------------------------------- model servers
    def _load(self, core: Any, name: str, rev: Revision, pred: dict[str, Any]) -> None:
        """Loads a revision's model: sklearn/xgboost/lightgbm/mlflow into MLServer (with the
        runtime of the format, as ``kserve-mlserver`` does), huggingface into the vLLM stand-in; a failure is kept as the revision's error (the server's own words)."""
        model = pred.get("model") or {}
        fmt = str((model.get("modelFormat") or {}).get("name") or "")
        sa = pred.get("serviceAccountName")
        if sa:
            error = self._check_service_account(core, name, str(sa))
            if error:
                rev.error = error
                return
        time.sleep(self.load_delay)
        if fmt == "huggingface":
            self._start_llm(rev, model)
            return
        protocol = str(model.get("protocolVersion") or "v1")
        explicit = str(model.get("runtime") or "")
        refused = runtime_error(fmt, protocol, explicit)
        if refused:
            rev.error = refused
            return
        if fmt not in MLSERVER_RUNTIMES:
            rev.error = (
                f"no runtime for model format {fmt} in the simulated cluster "
                f"({', '.join(MLSERVER_RUNTIMES)} and huggingface are served)"
            )
            return
        internal = f"ks-{rev.name}-{rev.digest[:6]}"
        spec = {
            "storageUri": model.get("storageUri") or "",
            "modelFormat": fmt,
            "protocolVersion": protocol,
        }
        error = self.mlserver.load(internal, spec)
        if error:
            # A container's termination message: the end of the server's error.
            rev.error = " | ".join(ln.strip() for ln in error.strip().splitlines()[-2:])
            return
        runtime = pick_runtime(fmt, protocol, explicit)
        objective = booster_objective(spec["storageUri"]) if fmt == "xgboost" else ""
        rev.backend = LoadedModel(name, self.namespace, 0, internal, rev.digest, runtime, objective)

    def _check_service_account(self, core: Any, name: str, sa: str) -> str:
        """The storage initializer's credentials: the ServiceAccount's Secrets must exist."""
        found = [s for s in self.objects("serviceaccounts") if s["metadata"]["name"] == sa]
        if not found:
            return f'serviceaccount "{sa}" not found'
        for ref in found[0].get("secrets") or []:
            error = self.check_secret(core, name, {"secretName": ref.get("name")})
            if error:
                return error
        return ""

    def _start_llm(self, rev: Revision, model: dict[str, Any]) -> None:
        from zenml_model_deployers.testing.kube_cluster.mlserver import free_port

        args = [str(a) for a in model.get("args") or []]
        opts = dict(a[2:].split("=", 1) for a in args if a.startswith("--") and "=" in a)
        model_id = opts.get("model_id") or str(model.get("storageUri") or "").removeprefix("hf://")
        served = opts.get("model_name") or rev.name
        port = free_port()
        log = open(self.root / f"{rev.name}.log", "wb")  # noqa: SIM115 - kept with proc
        proc = subprocess.Popen(  # noqa: S603 - our own argv
            [
                sys.executable,
                "-m",
                "zenml_model_deployers.testing.vllm_standin",
                "serve",
                model_id,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--served-model-name",
                served,
                "--max-model-len",
                "512",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        import requests

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                text = (self.root / f"{rev.name}.log").read_text(errors="replace")
                rev.error = "\n".join(text.strip().splitlines()[-3:]) or "the server exited"
                return
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).status_code == 200:
                    rev.backend = LLMServer(proc, port, served)
                    return
            time.sleep(0.2)
        self._stop_proc(proc)
        rev.error = "the Hugging Face server did not become ready in 120 s"

    @staticmethod
    def _stop_proc(proc: subprocess.Popen[bytes]) -> None:
        import psutil

        from zenml_model_deployers.local.process import terminate_all

        with contextlib.suppress(psutil.Error):
            terminate_all([psutil.Process(proc.pid)], 10)
        with contextlib.suppress(Exception):
            proc.wait(timeout=5)

    def _release(self, rev: Revision | None, drain: bool = False) -> None:
        """Stops a revision's server (``drain``: once requests already routed to it ended)."""
        if rev is None or rev.backend is None:
            return
        backend, rev.backend = rev.backend, None
        if isinstance(backend, LLMServer):
            stop: Any = self._stop_proc
            arg: Any = backend.proc
        else:
            stop, arg = self.mlserver.unload, backend.internal
        if drain:
            self.mlserver.later(stop, arg)
        else:
            stop(arg)

    def close(self) -> None:
        """Stops every model server process this controller started (by pid), and the
        queue-proxy metrics port."""
        for name in list(self.states):
            self._drop(name)
        self.gateway.queue_proxy.close()

    def _set_status(
        self, custom: Any, name: str, status: dict[str, Any], merge_components: bool = False
    ) -> None:
        if not merge_components:
            for key in ("components", "modelStatus", "canaryStatuses"):
                status.setdefault(key, None)
        self.patch_status(custom, "inferenceservices", name, status)


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


def _conds(*items: tuple[str, str, str, str]) -> list[dict[str, Any]]:
    at = now()
    out = []
    for t, status, reason, message in items:
        c: dict[str, Any] = {"type": t, "status": status, "lastTransitionTime": at}
        if reason:
            c["reason"] = reason
        if message:
            c["message"] = message
        out.append(c)
    return out


def _model_status(ok: bool, error: str, revision: str) -> dict[str, Any]:
    if ok:
        return {
            "transitionStatus": "UpToDate",
            "states": {"activeModelState": "Loaded", "targetModelState": "Loaded"},
        }
    return {
        "transitionStatus": "BlockedByFailedLoad",
        "states": {"activeModelState": "FailedToLoad", "targetModelState": "FailedToLoad"},
        "lastFailureInfo": {
            "reason": "ModelLoadFailed",
            "message": error,
            "modelRevisionName": revision,
        },
    }
