"""The simulated cluster's API server: ``kmock``'s in-memory Kubernetes emulator (PyPI) on a
thread of its own, reached by the real ``kubernetes`` client through a kubeconfig, plus what the
flavors rely on and kmock lacks: every custom object sent is validated against its CRD's
``openAPIV3Schema`` (a field a real API server would reject fails with 422),
``metadata.generation`` / ``uid`` / ``resourceVersion`` as a real server keeps them, server-side
dry runs, RBAC refusals (403, injectable per verb and resource), and pod logs."""

from __future__ import annotations

import asyncio
import copy
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from zenml_model_deployers.testing.kube_cluster.crds import KINDS, validate_manifest

# The controllers' requests say who sent them, so tests can tell them from the flavor's.
CONTROLLER_AGENT = "zmd-simulated-controller"
# The pod of Seldon's default MLServer Server (its log is MLServer's).
SERVER_POD = "mlserver-0"
_NAMESPACE_PATH = re.compile(r"^/api/v1/namespaces/([^/]+)/?$")
_POD_LOG_PATH = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)/log$")


@dataclass
class ClusterLog:
    """What the API server received (for tests' assertions).

    Attributes:
        requests: verb, plural, name, namespace, subresource, params, body, by_controller.
        rejected: manifests refused by the CRD schema (plural, errors).
    """

    requests: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)


@dataclass(eq=False)
class ApiServer:
    """kmock's emulator on its own thread and event loop, with our additions.

    Attributes:
        namespace: the namespace that exists.
        install: the custom resource kinds installed (their API groups answer discovery).
        schemas: plural -> the schema manifests of that kind are validated against (shared
            with the cluster: a change shows at the next request).
        log: every request received with its body, and the rejected manifests.
        forbidden: (verb, plural) pairs refused with 403 (shared with the cluster).
        pod_log: the model server pod's log (``tail`` lines), or None: no model server pod.
        url: the API server's URL (set by ``start``).
    """

    namespace: str
    install: tuple[str, ...]
    schemas: dict[str, Any]
    log: ClusterLog
    forbidden: set[tuple[str, str]]
    pod_log: Callable[[int], str] | None
    url: str = ""
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _stop_event: asyncio.Event | None = None
    _ready: threading.Event = field(default_factory=threading.Event)
    _emulator: Any = None
    _errors: list[str] = field(default_factory=list)

    def start(self) -> None:
        """Starts the server on its thread; returns once it answers.

        Raises:
            RuntimeError: it did not start within 30 s (with the error it met).
        """
        self._thread = threading.Thread(target=self._serve, name="zmd-kmock", daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError(f"the Kubernetes emulator did not start: {self._errors}")

    def close(self) -> None:
        """Stops the server and its thread."""
        if self._loop is not None and self._stop_event is not None:
            self._loop.call_soon_threadsafe(self._stop_event.set)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._api_main())
        except Exception as e:  # noqa: BLE001 - reported by start()
            self._errors.append(repr(e))
            self._ready.set()
        finally:
            loop.close()

    async def _api_main(self) -> None:
        import kmock

        # One access-log line per API call drowns what the user runs.
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
        emulator = _make_emulator(self)
        self._stop_event = asyncio.Event()
        async with emulator, kmock.Server(emulator) as server:
            self._emulator = emulator
            for plural in self.install:
                group, version, kind, _ = KINDS[plural]
                emulator.resources[f"{group}/{version}/{plural}"] = kmock.ResourceInfo(
                    kind=kind,
                    namespaced=True,
                    verbs={"get", "list", "watch", "create", "patch", "delete"},
                    subresources={"status"},
                )
            for core in ("namespaces", "secrets", "pods", "serviceaccounts"):
                emulator.resources[f"v1/{core}"] = kmock.ResourceInfo(
                    kind=core[:-1].capitalize(), namespaced=core != "namespaces"
                )
            self.add_namespace(self.namespace)
            if self.pod_log is not None:
                # The pod of Seldon's default MLServer Server (its log is MLServer's).
                emulator.objects[kmock.resource("v1/pods"), self.namespace, SERVER_POD] = {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "name": SERVER_POD,
                        "namespace": self.namespace,
                        "labels": {"seldon-server-name": "mlserver"},
                    },
                    "status": {"phase": "Running"},
                }
            self.url = str(server.url).rstrip("/")
            self._ready.set()
            await self._stop_event.wait()

    def add_namespace(self, name: str) -> None:
        """Creates a namespace object (call from the API server's thread or before start).

        Args:
            name: the namespace.
        """
        import kmock

        self._emulator.objects[kmock.resource("v1/namespaces"), None, name] = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "uid": str(uuid.uuid4())},
            "status": {"phase": "Active"},
        }

    def objects(self, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """The live objects of a resource, as the API server holds them.

        Args:
            plural: e.g. ``models`` or ``secrets``.
            namespace: default: the cluster's namespace.

        Returns:
            Deep copies.
        """
        ns = namespace or self.namespace
        out = []
        for (res, obj_ns, _), obj in list(self._emulator.objects.items()):
            if res.plural == plural and obj_ns == ns and not obj.deleted:
                out.append(copy.deepcopy(dict(obj.raw)))
        return out

    def write_kubeconfig(self, path: str, context: str) -> None:
        """Writes a kubeconfig whose current context is this server.

        Args:
            path: where.
            context: the context's (and cluster's) name.
        """
        import yaml

        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": context, "cluster": {"server": self.url}}],
            "users": [{"name": "zmd-test", "user": {"token": "zmd-simulated-token"}}],
            "contexts": [
                {
                    "name": context,
                    "context": {
                        "cluster": context,
                        "user": "zmd-test",
                        "namespace": self.namespace,
                    },
                }
            ],
            "current-context": context,
        }
        Path(path).write_text(yaml.safe_dump(cfg))


def _make_emulator(server: ApiServer) -> Any:
    """kmock's emulator plus schema validation, generations, RBAC refusals and pod logs."""
    import kmock
    from kmock._internal import enums

    verbs = {
        enums.action.CREATE: "create",
        enums.action.UPDATE: "patch",
        enums.action.DELETE: "delete",
        enums.action.FETCH: "get",
        enums.action.LIST: "list",
        enums.action.WATCH: "watch",
    }

    class Emulator(kmock.KubernetesEmulator):
        async def _handle(self, request: Any) -> Any:
            logs = _POD_LOG_PATH.match(request.url.path)
            if logs and server.pod_log is not None:
                # The model server pod's log is MLServer's own.
                import aiohttp.web

                if ("get", "pods/log") in server.forbidden:
                    return aiohttp.web.json_response(
                        {
                            "kind": "Status",
                            "code": 403,
                            "reason": "Forbidden",
                            "message": f'pods "{logs.group(2)}" is forbidden: User '
                            '"system:serviceaccount:zmd:deployer" cannot get resource "pods/log"',
                        },
                        status=403,
                    )
                text = server.pod_log(int(request.params.get("tailLines") or 10000))
                return aiohttp.web.Response(text=text + "\n", content_type="text/plain")
            match = _NAMESPACE_PATH.match(request.url.path)
            if match and str(request.method.value).upper() == "GET":
                # kmock reads /api/v1/namespaces/<name> as a listing inside that namespace.
                import aiohttp.web

                key = (kmock.resource("v1/namespaces"), None, match.group(1))
                if key in self.objects and not self.objects[key].deleted:
                    return aiohttp.web.json_response(dict(self.objects[key].raw))
                return aiohttp.web.json_response(
                    {
                        "apiVersion": "v1",
                        "kind": "Status",
                        "status": "Failure",
                        "code": 404,
                        "reason": "NotFound",
                        "message": f'namespaces "{match.group(1)}" not found',
                    },
                    status=404,
                )
            if request.action == enums.action.LIST and str(
                request.params.get("watch", "")
            ).lower() in ("true", "1"):
                # The kubernetes client sends watch=True; kmock only knows watch=true (the
                # API server parses both). Requests are frozen: set the parsed action in place.
                object.__setattr__(request, "action", enums.action.WATCH)
            if request.resource is not None:
                plural = request.resource.plural
                verb = verbs.get(request.action, str(request.action))
                server.log.requests.append(
                    {
                        "verb": verb,
                        "plural": plural,
                        "name": request.name,
                        "namespace": request.namespace,
                        "subresource": request.subresource,
                        "params": dict(request.params),
                        "body": copy.deepcopy(request.data),
                        "by_controller": request.headers.get("User-Agent") == CONTROLLER_AGENT,
                    }
                )
                if (verb, plural) in server.forbidden:
                    group = request.resource.group or '""'
                    raise kmock.KubernetesError(
                        status=403,
                        reason="Forbidden",
                        message=(
                            f'{plural}.{request.resource.group} "{request.name or ""}" is '
                            f'forbidden: User "system:serviceaccount:zmd:deployer" cannot '
                            f'{verb} resource "{plural}" in API group {group} in the '
                            f'namespace "{request.namespace}"'
                        ),
                        details={},
                    )
                if request.namespace and plural != "namespaces":
                    ns_key = (kmock.resource("v1/namespaces"), None, request.namespace)
                    if ns_key not in self.objects or self.objects[ns_key].deleted:
                        raise kmock.KubernetesError(
                            status=404,
                            reason="NotFound",
                            message=f'namespaces "{request.namespace}" not found',
                            details={},
                        )
                if (
                    request.action == enums.action.UPDATE
                    and str(request.params.get("dryRun", "")) == "All"
                    and isinstance(request.data, dict)
                ):
                    return self._dry_run_patch(plural, request)
                if request.action == enums.action.CREATE and isinstance(request.data, dict):
                    self._on_create(plural, request)
                elif (
                    request.action == enums.action.UPDATE
                    and isinstance(request.data, dict)
                    and request.subresource is None
                ):
                    self._on_patch(plural, request)
            return await super()._handle(request)

        def _on_create(self, plural: str, request: Any) -> None:
            errors = validate_manifest(plural, request.data, server.schemas)
            if errors:
                self._reject(plural, request, errors)
            meta = request.data.setdefault("metadata", {})
            meta.setdefault("namespace", request.namespace)
            meta["uid"] = str(uuid.uuid4())
            meta["generation"] = 1
            meta["resourceVersion"] = str(time.monotonic_ns())
            meta["creationTimestamp"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

        def _on_patch(self, plural: str, request: Any) -> None:
            from kmock._internal import dicts

            key = (request.resource, request.namespace, request.name)
            if key not in self.objects or self.objects[key].deleted:
                return
            current = copy.deepcopy(dict(self.objects[key].raw))
            merged = dicts.patch_dict(copy.deepcopy(current), request.data)
            errors = validate_manifest(plural, dict(merged), server.schemas)
            if errors:
                self._reject(plural, request, errors)
            meta = request.data.setdefault("metadata", {}) or {}
            request.data["metadata"] = meta
            if merged.get("spec") != current.get("spec"):
                meta["generation"] = int(current["metadata"].get("generation") or 1) + 1
            meta["resourceVersion"] = str(time.monotonic_ns())

        def _dry_run_patch(self, plural: str, request: Any) -> Any:
            """``dryRun=All``: validated and answered as if applied, never stored (kmock
            would store it)."""
            import aiohttp.web
            from kmock._internal import dicts

            key = (request.resource, request.namespace, request.name)
            if key not in self.objects or self.objects[key].deleted:
                raise kmock.KubernetesError(
                    status=404, reason="NotFound", message=f'"{request.name}" not found', details={}
                )
            current = copy.deepcopy(dict(self.objects[key].raw))
            merged = dicts.patch_dict(copy.deepcopy(current), request.data)
            errors = validate_manifest(plural, dict(merged), server.schemas)
            if errors:
                self._reject(plural, request, errors)
            return aiohttp.web.json_response(dict(merged))

        def _reject(self, plural: str, request: Any, errors: list[str]) -> None:
            server.log.rejected.append({"plural": plural, "errors": errors})
            kind = KINDS[plural][2] if plural in KINDS else plural
            name = (request.data.get("metadata") or {}).get("name") or request.name
            raise kmock.KubernetesError(
                status=422,
                reason="Invalid",
                message=f'{kind}.{request.resource.group} "{name}" is invalid: '
                + "; ".join(errors),
                details={},
            )

    return Emulator()
