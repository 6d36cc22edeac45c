"""The Seldon part of the simulated cluster: a controller that reconciles Seldon Core 2
``Model``s and ``Experiment``s and Core 1 ``SeldonDeployment``s like Seldon's scheduler, and the
mesh that routes their requests.

- Core 2: a ``Model`` whose ``requirements`` are not all capabilities of Seldon's MLServer
  fails to schedule (the scheduler's message); else its ``storageUri`` loads into the
  cluster's real MLServer, with the runtime its ``model-settings.json`` names or, without one,
  the settings Seldon's agent makes from the first requirement it knows (or refuses to make,
  in its words: ``mlserver.seldon_agent_settings``), under a per-version name (``<model>_<version>``, as Seldon's agent names it); the route switches only
  once the new version is loaded (the old one serves until then); ``ModelReady``/``Ready``
  conditions with ``observedGeneration``, or ``ModelReady=False`` with MLServer's own error. An
  ``Experiment`` splits its default model's requests by weight once every candidate is ready.
- Core 1: each predictor with replicas loads (the prepackaged SKLEARN_SERVER: ``model.joblib``
  for protocol ``seldon``; MLServer's sklearn runtime from its environment for ``v2``, where a
  ``model-settings.json`` in the folder takes over, its model name included); the old
  predictors serve until every new one is loaded; ``state: Available`` or ``Failed``.
- The mesh routes ``/v2/models/{name}/...`` by the ``Seldon-Model`` header to the model's
  current version (or a candidate), and ``/seldon/{namespace}/{name}/...`` like Core 1's
  ingress and executor.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from zenml_model_deployers.packaging.native import MLSERVER_RUNTIMES
from zenml_model_deployers.testing.kube_cluster.controller import SimulatedController, now
from zenml_model_deployers.testing.kube_cluster.mlserver import LoadedModel

# The capabilities of Seldon Core 2's MLServer (its default ServerConfig): a Model is scheduled on
# a server only when its requirements are among them.
MLSERVER_CAPABILITIES = (
    "mlserver",
    "alibi-detect",
    "alibi-explain",
    "huggingface",
    "lightgbm",
    "mlflow",
    "python",
    "sklearn",
    "spark-mlib",
    "xgboost",
)


def schedule_error(name: str, spec: dict[str, Any]) -> str:
    """Why Seldon's scheduler places the Model on no server (its words), "" when MLServer fits.

    Args:
        name: the Model.
        spec: its spec.

    Returns:
        The scheduler's failure, or "".
    """
    reqs = [str(r) for r in spec.get("requirements") or []]
    if all(r in MLSERVER_CAPABILITIES for r in reqs):
        return ""
    return (
        f"failed to schedule model {name}. [failed replica filter RequirementsReplicaFilter for "
        f"server replica mlserver:0 : model requirements [{' '.join(reqs)}] replica "
        f"capabilities [{' '.join(MLSERVER_CAPABILITIES)}]]"
    )


@dataclass(eq=False)
class SeldonController(SimulatedController):
    """Reconciles Seldon's kinds into MLServer; :meth:`route` is the mesh.

    Attributes:
        routes: (namespace, Model) -> what serves it now.
        splits: (namespace, default model) -> [(candidate model, weight)] of ready Experiments.
        sdep_routes: Core 1: (namespace, SeldonDeployment) -> (protocol, [(traffic, what
            serves the predictor)]).
    """

    routes: dict[tuple[str, str], LoadedModel] = field(default_factory=dict)
    splits: dict[tuple[str, str], list[tuple[str, int]]] = field(default_factory=dict)
    sdep_routes: dict[tuple[str, str], tuple[str, list[tuple[int, LoadedModel]]]] = field(
        default_factory=dict
    )
    _routes_lock: threading.Lock = field(default_factory=threading.Lock)
    # Core 2 Model name -> the last version loaded (the agent names it <model>_<version>)
    _versions: dict[str, int] = field(default_factory=dict)

    def reconcile(self, custom: Any, core: Any) -> None:
        """One pass over the namespace's Models, Experiments and SeldonDeployments.

        Args:
            custom: ``CustomObjectsApi`` (as the controller).
            core: ``CoreV1Api``.
        """
        self._reconcile_models(custom, core)
        self._reconcile_experiments(custom)
        self._reconcile_seldon_deployments(custom, core)

    def route(self, method: str, path: str, header: str, body: bytes) -> tuple[int, bytes]:
        """Serves one ingress request: picks the model by the ``Seldon-Model`` header.

        Args:
            method: HTTP method.
            path: the path, e.g. ``/v2/models/iris/infer``.
            header: the ``Seldon-Model`` header.
            body: the request body.

        Returns:
            (status, body).
        """
        if path.startswith("/seldon/"):
            return self.route_core1(method, path, body)
        if path in ("/v2/health/ready", "/v2/health/live"):
            return 200, b""
        if not header:
            return 404, b'{"error": "no Seldon-Model header: the mesh cannot route"}'
        name = header.split(".")[0]
        with self._routes_lock:
            target = name
            split = self.splits.get((self.namespace, name))
            if split:
                # An Experiment whose default is this model: pick a candidate by weight.
                pick = random.uniform(0, sum(w for _, w in split))
                for candidate, weight in split:
                    target = candidate
                    pick -= weight
                    if pick < 0:
                        break
            loaded = self.routes.get((self.namespace, target))
        if loaded is None:
            return 404, json.dumps({"error": f"model {name} not found"}).encode()
        prefix = f"/v2/models/{name}"
        if not path.startswith(prefix):
            return 404, json.dumps({"error": f"path {path} is not under {prefix}"}).encode()
        import requests

        try:
            return self.mlserver.forward_v2(method, loaded, path[len(prefix) :], body, loaded.name)
        except requests.RequestException as e:
            return 503, json.dumps({"error": f"upstream: {e}"}).encode()

    def _reconcile_models(self, custom: Any, core: Any) -> None:
        items = self.installed_items(custom, "models")
        present = set()
        for model in items:
            meta = model.get("metadata") or {}
            name = meta["name"]
            present.add((self.namespace, name))
            generation = int(meta.get("generation") or 1)
            observed = int((model.get("status") or {}).get("observedGeneration") or 0)
            if observed >= generation:
                continue
            self._load(custom, core, model, name, generation)
        with self._routes_lock:
            gone = [k for k in self.routes if k not in present]
        for key in gone:
            with self._routes_lock:
                loaded = self.routes.pop(key)
            self.mlserver.unload(loaded.internal)

    def _reconcile_experiments(self, custom: Any) -> None:
        """Experiments route their default model's requests to their candidates by weight,
        once every candidate is loaded (Ready), like Seldon's pipeline gateway."""
        items = self.installed_items(custom, "experiments")
        present = set()
        for exp in items:
            meta = exp.get("metadata") or {}
            spec = exp.get("spec") or {}
            default = spec.get("default") or meta["name"]
            key = (self.namespace, default)
            present.add(key)
            candidates = [
                (c["name"], int(c.get("weight") or 0)) for c in spec.get("candidates") or []
            ]
            with self._routes_lock:
                missing = [c for c, _ in candidates if (self.namespace, c) not in self.routes]
                if not missing:
                    self.splits[key] = candidates
                else:
                    self.splits.pop(key, None)
            ready = not missing
            gen = int(meta.get("generation") or 1)
            status = exp.get("status") or {}
            conds = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
            flag = "True" if ready else "False"
            if int(status.get("observedGeneration") or 0) == gen and conds.get("Ready") == flag:
                continue
            at = now()
            message = "" if ready else f"candidates not ready: {', '.join(missing)}"
            conditions = [
                {
                    "type": t,
                    "status": flag,
                    "reason": "" if ready else "CandidatesNotReady",
                    "message": message,
                    "lastTransitionTime": at,
                }
                for t in ("Ready", "CandidatesReady")
            ]
            with contextlib.suppress(Exception):
                status = {"conditions": conditions, "observedGeneration": gen}
                self.patch_status(custom, "experiments", meta["name"], status)
        with self._routes_lock:
            for key in [k for k in self.splits if k not in present]:
                self.splits.pop(key)

    def _reconcile_seldon_deployments(self, custom: Any, core: Any) -> None:
        """Core 1: each predictor with replicas is loaded into MLServer (the prepackaged
        SKLEARN_SERVER); the old predictors serve until every new one is loaded; replicas 0
        unloads; a load failure is ``state: Failed`` with the server's error."""
        items = self.installed_items(custom, "seldondeployments")
        present = set()
        for sd in items:
            meta = sd.get("metadata") or {}
            present.add((self.namespace, meta["name"]))
            gen = int(meta.get("generation") or 1)
            if int((sd.get("status") or {}).get("observedGeneration") or 0) >= gen:
                continue
            self._load_sdep(custom, core, sd, meta["name"], gen)
        with self._routes_lock:
            gone = [k for k in self.sdep_routes if k not in present]
            dropped = [self.sdep_routes.pop(k) for k in gone]
        for _, preds in dropped:
            for _, loaded in preds:
                self.mlserver.unload(loaded.internal)

    def _load_sdep(self, custom: Any, core: Any, sd: dict[str, Any], name: str, gen: int) -> None:
        spec = sd.get("spec") or {}
        protocol = str(spec.get("protocol") or "seldon")
        key = (self.namespace, name)
        self._set_sdep_status(custom, name, gen - 1, "Creating", "rolling out", 0)
        with self._routes_lock:
            old = list(self.sdep_routes.get(key, ("", []))[1])
        reusable = {m.spec_digest: m for _, m in old}
        new: list[tuple[int, LoadedModel]] = []
        fresh: list[LoadedModel] = []
        error = ""
        predictors = spec.get("predictors") or []
        for pred in predictors:
            if int(pred.get("replicas", 1)) == 0:
                continue
            graph = pred.get("graph") or {}
            traffic = int(pred.get("traffic") or (100 if len(predictors) == 1 else 0))
            if pred.get("componentSpecs") or graph.get("implementation") != "SKLEARN_SERVER":
                what = graph.get("implementation") or "a custom image"
                error = f"{what} is not available in the simulated cluster (SKLEARN_SERVER is)"
                break
            digest = hashlib.sha256(json.dumps(graph, sort_keys=True).encode()).hexdigest()[:12]
            if digest in reusable:
                new.append((traffic, reusable[digest]))
                continue
            model_spec = {
                "storageUri": graph.get("modelUri") or "",
                "secretName": graph.get("envSecretRefName"),
                "parameters": graph.get("parameters") or [],
                # SKLEARN_SERVER: Seldon's SKLearnServer (protocol seldon) or MLServer with
                # the sklearn runtime in its environment (protocol v2).
                "implementation": MLSERVER_RUNTIMES["sklearn"],
                "protocol": protocol,
            }
            error = self.check_secret(core, name, model_spec)
            if error:
                break
            internal = f"sd-{name}-{pred['name']}-g{gen}-{digest[:6]}"
            time.sleep(self.load_delay)
            error = self.mlserver.load(internal, model_spec)
            if error:
                break
            loaded = LoadedModel(name, self.namespace, gen, internal, digest)
            fresh.append(loaded)
            new.append((traffic, loaded))
        latest = None
        with contextlib.suppress(Exception):
            latest = self.read(custom, "seldondeployments", name)
        moved = latest is None or int((latest.get("metadata") or {}).get("generation") or 1) != gen
        if error or moved:
            for loaded in fresh:
                self.mlserver.unload(loaded.internal)
            if error and not moved:
                self._set_sdep_status(custom, name, gen, "Failed", error, 0)
            return
        with self._routes_lock:
            self.sdep_routes[key] = (protocol, new)
        kept = {m.internal for _, m in new}
        for _, loaded in old:
            if loaded.internal not in kept:
                self.mlserver.retire(loaded.internal)
        self._set_sdep_status(custom, name, gen, "Available", "", len(new))

    def _set_sdep_status(
        self, custom: Any, name: str, gen: int, state: str, description: str, replicas: int
    ) -> None:
        status = {
            "state": state,
            "description": description,
            "observedGeneration": gen,
            "replicas": replicas,
        }
        with contextlib.suppress(Exception):
            self.patch_status(custom, "seldondeployments", name, status)

    def route_core1(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        """Serves ``/seldon/{ns}/{name}/...`` like Seldon Core 1's ingress and executor.

        Args:
            method: HTTP method.
            path: the path.
            body: the request body.

        Returns:
            (status, body).
        """
        parts = path.split("/", 4)  # '', 'seldon', ns, name, rest
        if len(parts) < 5:
            return 404, b'{"error": "not a /seldon/{namespace}/{name}/... path"}'
        ns, name, rest = parts[2], parts[3], "/" + parts[4]
        with self._routes_lock:
            entry = self.sdep_routes.get((ns, name))
        if entry is None or not entry[1]:
            return 503, b"no healthy upstream"
        protocol, preds = entry
        if rest in ("/api/v1.0/health/status", "/api/v1.0/health/ping", "/v2/health/ready"):
            return 200, b'{"status": "ok"}'
        pick = random.uniform(0, sum(t for t, _ in preds) or 1)
        loaded = preds[-1][1]
        for traffic, candidate in preds:
            pick -= traffic
            if pick < 0:
                loaded = candidate
                break
        if rest == "/api/v1.0/predictions" and protocol == "seldon":
            return self._seldon_predict(loaded, body)
        # The executor calls the graph's node by its name (the flavor's one node: classifier).
        prefix = "/v2/models/classifier"
        if protocol == "v2" and rest.startswith(prefix):
            rest = rest[len(prefix) :]
            return self.mlserver.forward_v2(method, loaded, rest, body, "classifier")
        return 404, json.dumps({"error": f"{rest} is not served by protocol {protocol}"}).encode()

    def _seldon_predict(self, loaded: LoadedModel, body: bytes) -> tuple[int, bytes]:
        """The Seldon protocol over MLServer's V2: ndarray in, ndarray out."""
        import numpy as np

        try:
            rows = np.asarray(json.loads(body)["data"]["ndarray"], dtype=np.float64)
        except (ValueError, KeyError, TypeError) as e:
            return 400, json.dumps({"status": {"code": -1, "info": f"bad request: {e}"}}).encode()
        if rows.ndim == 1:
            rows = rows.reshape(1, -1)
        v2 = {
            "inputs": [
                {
                    "name": "predict",
                    "shape": list(rows.shape),
                    "datatype": "FP64",
                    "data": rows.reshape(-1).tolist(),
                }
            ]
        }
        r = self.mlserver.request("POST", f"/v2/models/{loaded.internal}/infer", json=v2)
        if r.status_code != 200:
            return r.status_code, r.content
        out = r.json()["outputs"][0]
        values = np.asarray(out["data"]).reshape(out["shape"]).tolist()
        answer = {"data": {"names": ["t:0"], "ndarray": values}, "meta": {}}
        return 200, json.dumps(answer).encode()

    def _load(self, custom: Any, core: Any, model: dict[str, Any], name: str, gen: int) -> None:
        spec = model.get("spec") or {}
        digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
        with self._routes_lock:
            current = self.routes.get((self.namespace, name))
        if current is not None and current.spec_digest == digest:
            # The spec came back to what serves (a rollback): nothing to load.
            self._set_model_status(custom, name, gen, True, "ModelAvailable", "", spec)
            return
        self._set_model_status(
            custom, name, gen, False, "ModelProgressing", "loading the model", spec
        )
        error = schedule_error(name, spec)
        reason = "ScheduleFailed" if error else "ModelFailed"
        error = error or self.check_secret(core, name, spec)
        # Seldon Core 2's agent loads version N of Model `name` into the server as `name_N`
        # (what MLServer's metrics call the model).
        loaded_version = self._versions.get(name, 0) + 1
        self._versions[name] = loaded_version
        internal = f"{name}_{loaded_version}"
        if not error:
            time.sleep(self.load_delay)
            error = self.mlserver.load(internal, spec)
        # The spec may have moved on while loading: report only for what was loaded.
        latest = self.read(custom, "models", name)
        if latest is None:
            if not error:
                self.mlserver.unload(internal)
            return
        if int((latest.get("metadata") or {}).get("generation") or 1) != gen:
            if not error:
                self.mlserver.unload(internal)
            return
        if error:
            self._set_model_status(custom, name, gen, False, reason, error, spec)
            return
        with self._routes_lock:
            old = self.routes.get((self.namespace, name))
            self.routes[(self.namespace, name)] = LoadedModel(
                name, self.namespace, gen, internal, digest
            )
        if old is not None:
            self.mlserver.retire(old.internal)
        self._set_model_status(custom, name, gen, True, "ModelAvailable", "", spec)

    def _set_model_status(
        self,
        custom: Any,
        name: str,
        gen: int,
        ready: bool,
        reason: str,
        message: str,
        spec: dict[str, Any],
    ) -> None:
        flag = "True" if ready else "False"
        at = now()
        conditions = [
            {
                "type": t,
                "status": flag,
                "reason": reason,
                "message": message,
                "lastTransitionTime": at,
            }
            for t in ("ModelReady", "Ready")
        ]
        replicas = int(spec.get("replicas") or 1)
        status = {
            "conditions": conditions,
            "observedGeneration": gen if reason != "ModelProgressing" else gen - 1,
            "replicas": replicas,
            "availableReplicas": replicas if ready else 0,
            "modelgwReady": "True" if ready else "False",
        }
        self.patch_status(custom, "models", name, status)
