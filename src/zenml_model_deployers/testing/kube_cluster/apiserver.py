"""The simulated cluster's API server: ``kmock``'s in-memory Kubernetes emulator (PyPI) on a
thread of its own, reached by the real ``kubernetes`` client (and ``kubectl``) through a
kubeconfig, plus what kmock lacks and a real kube-apiserver does: every custom object sent is
validated against its CRD's ``openAPIV3Schema`` (an invalid value: 422 ``Invalid``; an unknown
field: 400 ``BadRequest``, strict decoding, in the API server's own words),
``metadata.generation`` / ``uid`` / ``resourceVersion`` kept as a real server keeps them, lists
with their ``kind``/``apiVersion`` and label and field selectors, ``Status`` errors (404
``NotFound``, 409 ``AlreadyExists``), discovery of the core kinds the flavors use and the CRDs,
OpenAPI v3 built from the CRDs, the tables ``kubectl get`` asks for (see ``discovery``),
server-side dry runs, RBAC refusals (403, injectable per verb and resource), and pod logs."""

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

import zenml_model_deployers.testing.kube_cluster.discovery as discovery
from zenml_model_deployers.testing.kube_cluster.crds import (
    BUNDLED_CRD_DIR,
    KINDS,
    load_crds,
    validate_manifest,
)

# The controllers' requests say who sent them, so tests can tell them from the flavor's.
CONTROLLER_AGENT = "zmd-simulated-controller"
# The pod of Seldon's default MLServer Server (its log is MLServer's).
SERVER_POD = "mlserver-0"
_NAMESPACE_PATH = re.compile(r"^/api/v1/namespaces/([^/]+)/?$")
_POD_LOG_PATH = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)/log$")
_GROUP_PATH = re.compile(r"^/apis/([^/]+)/?$")
_GROUP_VERSION_PATH = re.compile(r"^/apis/([^/]+)/([^/]+)/?$")
_OPENAPI_V3_PATH = re.compile(r"^/openapi/v3/(api/v1|apis/[^/]+/[^/]+)/?$")


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
        crd_dir: where the installed kinds' CRDs are (their names, short names and printer
            columns; the schemas are ``schemas``).
    """

    namespace: str
    install: tuple[str, ...]
    schemas: dict[str, Any]
    log: ClusterLog
    forbidden: set[tuple[str, str]]
    pod_log: Callable[[int], str] | None
    url: str = ""
    crd_dir: Path = BUNDLED_CRD_DIR
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
            for core in discovery.CORE_KINDS.values():
                emulator.resources[f"v1/{core.plural}"] = kmock.ResourceInfo(
                    kind=core.kind,
                    namespaced=core.namespaced,
                    verbs=set(discovery.VERBS),
                    shortnames=set(core.short),
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
                        "uid": str(uuid.uuid4()),
                        "creationTimestamp": _now(),
                    },
                    "spec": {"containers": [{"name": "mlserver", "image": "seldonio/mlserver"}]},
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
            "metadata": {"name": name, "uid": str(uuid.uuid4()), "creationTimestamp": _now()},
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

    installed = {p: crd for p, crd in load_crds(server.crd_dir).items() if p in server.install}

    class Emulator(kmock.KubernetesEmulator):
        async def __call__(self, raw_request: Any) -> Any:
            # kmock's path parser cannot read the namespaces' collection (/api/v1/namespaces).
            if raw_request.path.rstrip("/") == "/api/v1/namespaces" and raw_request.method == "GET":
                import aiohttp.web

                res = kmock.resource("v1/namespaces")
                items = [
                    copy.deepcopy(dict(obj.raw))
                    for (r, _, _), obj in list(self.objects.items())
                    if r == res and not obj.deleted
                ]
                items = [o for o in items if _selected(o, raw_request.query)]
                if "as=Table" in raw_request.headers.get("Accept", ""):
                    return aiohttp.web.json_response(discovery.table("namespaces", None, items))
                return aiohttp.web.json_response(
                    {
                        "kind": "NamespaceList",
                        "apiVersion": "v1",
                        "metadata": {"resourceVersion": str(time.monotonic_ns())},
                        "items": items,
                    }
                )
            return await super().__call__(raw_request)

        async def _handle(self, request: Any) -> Any:
            import aiohttp.web

            if str(request.method.value).upper() == "GET":
                doc = _self_description(request.url.path, installed, server)
                if doc is not None:
                    return aiohttp.web.json_response(doc[1], status=doc[0])
            if request.body and request.data is None:
                # A body in another encoding (kubectl sends built-in kinds as protobuf to
                # `kubectl create secret ...`): this server reads JSON only.
                return aiohttp.web.json_response(
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "metadata": {},
                        "status": "Failure",
                        "message": "the body of the request was in an unknown format - accepted "
                        "media types include: application/json, application/merge-patch+json "
                        "(the simulated API server reads no protobuf)",
                        "reason": "UnsupportedMediaType",
                        "code": 415,
                    },
                    status=415,
                )
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
                self._check_exists(plural, request)
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

        def _check_exists(self, plural: str, request: Any) -> None:
            """A real API server's ``Status``: an unknown resource, a missing object (404
            NotFound), a name taken (409 AlreadyExists)."""
            if not any(r == request.resource for r in self._get_resources()):
                raise kmock.KubernetesError(
                    status=404,
                    reason="NotFound",
                    message="the server could not find the requested resource",
                    details={},
                )
            group, _, _ = _group_version_kind(plural)
            what = (
                discovery.qualified(plural) if group or plural in discovery.CORE_KINDS else plural
            )
            if request.action == enums.action.CREATE and isinstance(request.data, dict):
                name = (request.data.get("metadata") or {}).get("name")
                key: Any = (request.resource, request.namespace, name)
                if name and key in self.objects and not self.objects[key].deleted:
                    raise kmock.KubernetesError(
                        status=409,
                        reason="AlreadyExists",
                        message=f'{what} "{name}" already exists',
                        details={"name": name, "group": group, "kind": plural},
                    )
            elif request.name is not None and request.action in (
                enums.action.FETCH,
                enums.action.UPDATE,
                enums.action.DELETE,
            ):
                key = (request.resource, request.namespace, request.name)
                if key not in self.objects or self.objects[key].deleted:
                    raise kmock.KubernetesError(
                        status=404,
                        reason="NotFound",
                        message=f'{what} "{request.name}" not found',
                        details={"name": request.name, "group": group, "kind": plural},
                    )

        async def _serve_list(self, request: Any) -> Any:
            """A list as the API server sends it: ``kind: <Kind>List``, ``apiVersion``, the
            selected items (``labelSelector``, ``fieldSelector``); or the ``Table`` kubectl
            asks for."""
            answer: Any = await super()._serve_list(request)
            plural = request.resource.plural
            items = [o for o in answer["items"] if _selected(o, request.params)]
            accept = str(request.headers.get("Accept") or "")
            if "as=Table" in accept:
                return discovery.table(plural, installed.get(plural), items)
            group, version, kind = _group_version_kind(plural)
            return {
                "kind": f"{kind}List",
                "apiVersion": f"{group}/{version}" if group else version,
                "metadata": {"resourceVersion": str(time.monotonic_ns())},
                "items": items,
            }

        async def _serve_fetch(self, request: Any) -> Any:
            """One object, or its one-row ``Table`` (``kubectl get <kind> <name>``)."""
            obj: Any = await super()._serve_fetch(request)
            if "as=Table" in str(request.headers.get("Accept") or "") and request.resource:
                plural = request.resource.plural
                return discovery.table(plural, installed.get(plural), [obj])
            return obj

        async def _serve_watch(self, request: Any) -> Any:
            """The watch stream, with the list's selectors applied to every event."""
            async for event in super()._serve_watch(request):
                if isinstance(event, dict) and not _selected(
                    event.get("object") or {}, request.params
                ):
                    continue
                yield event

        def _on_create(self, plural: str, request: Any) -> None:
            if plural == "secrets":
                _encode_string_data(request.data)
            errors = validate_manifest(plural, request.data, server.schemas)
            if errors:
                self._reject(plural, request, errors)
            meta = request.data.setdefault("metadata", {})
            meta.setdefault("namespace", request.namespace)
            meta["uid"] = str(uuid.uuid4())
            meta["generation"] = 1
            meta["resourceVersion"] = str(time.monotonic_ns())
            meta["creationTimestamp"] = _now()

        def _on_patch(self, plural: str, request: Any) -> None:
            from kmock._internal import dicts

            key = (request.resource, request.namespace, request.name)
            if key not in self.objects or self.objects[key].deleted:
                return
            if plural == "secrets":
                _encode_string_data(request.data)
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
            """Refuses a manifest as the API server does: unknown fields fail strict decoding
            (400 BadRequest); invalid values are field errors (422 Invalid)."""
            server.log.rejected.append({"plural": plural, "errors": errors})
            group, version, kind = _group_version_kind(plural)
            name = (request.data.get("metadata") or {}).get("name") or request.name
            unknown = [e for e in errors if e.startswith("unknown field ")]
            if unknown:
                raise kmock.KubernetesError(
                    status=400,
                    reason="BadRequest",
                    message=f'{kind} in version "{version}" cannot be handled as a {kind}: '
                    f"strict decoding error: {', '.join(unknown)}",
                    details={},
                )
            causes = [
                {
                    "reason": "FieldValueInvalid",
                    "message": e.partition(": ")[2],
                    "field": e.partition(": ")[0],
                }
                for e in errors
            ]
            listed = errors[0] if len(errors) == 1 else f"[{', '.join(errors)}]"
            raise kmock.KubernetesError(
                status=422,
                reason="Invalid",
                message=f'{kind}.{group} "{name}" is invalid: {listed}',
                details={"name": name, "group": group, "kind": kind, "causes": causes},
            )

    return Emulator()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _encode_string_data(secret: dict[str, Any]) -> None:
    """A Secret's ``stringData`` goes into ``data``, base64-encoded, as the API server does."""
    import base64

    plain = secret.pop("stringData", None) or {}
    if plain:
        data = secret.get("data") or {}
        for k, v in plain.items():
            data[k] = base64.b64encode(str(v).encode()).decode()
        secret["data"] = data


def _group_version_kind(plural: str) -> tuple[str, str, str]:
    """(group, version, kind) of a core kind or a CRD's plural (unknown: its plural)."""
    if plural in discovery.CORE_KINDS or plural in KINDS:
        return discovery.kind_of(plural)
    return "", "v1", plural


def _self_description(
    path: str, installed: dict[str, Any], server: ApiServer
) -> tuple[int, Any] | None:
    """The answer to a discovery, OpenAPI or version request, or None: not one of those."""
    not_found = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "the server could not find the requested resource",
        "reason": "NotFound",
        "details": {},
        "code": 404,
    }
    path = path.rstrip("/") or "/"
    if path == "/version":
        return 200, discovery.SERVER_VERSION
    if path == "/api":
        return 200, {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
        }
    if path == "/api/v1":
        return 200, discovery.core_resources(server.pod_log is not None)
    if path == "/apis":
        return 200, discovery.groups(installed)
    if path == "/openapi/v3":
        return 200, discovery.openapi_paths(installed, server.schemas)
    if path == "/openapi/v2":
        # Served as protobuf by a real server; kubectl reads v3 when the server has it.
        return 404, not_found
    m = _OPENAPI_V3_PATH.match(path)
    if m:
        doc = discovery.openapi_document(m.group(1), installed, server.schemas)
        return (200, doc) if doc is not None else (404, not_found)
    m = _GROUP_PATH.match(path)
    if m:
        versions = {discovery.kind_of(p)[0] for p in installed}
        return (
            (200, discovery.group(m.group(1), installed))
            if m.group(1) in versions
            else (
                404,
                not_found,
            )
        )
    m = _GROUP_VERSION_PATH.match(path)
    if m:
        doc = discovery.group_resources(m.group(1), m.group(2), installed)
        return (200, doc) if doc is not None else (404, not_found)
    return None


def _selected(obj: dict[str, Any], params: Any) -> bool:
    """Whether an object matches a request's ``labelSelector`` and ``fieldSelector``
    (equality, inequality, existence and set-based terms, as the API server parses them)."""
    meta = obj.get("metadata") or {}
    labels = meta.get("labels") or {}
    for term in _terms(str(params.get("labelSelector") or "")):
        if not _label_term(labels, term):
            return False
    fields = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
    }
    for term in _terms(str(params.get("fieldSelector") or "")):
        key, op, value = _split_term(term)
        if key not in fields:
            continue
        if (fields[key] == value) != (op in ("=", "==")):
            return False
    return True


def _terms(selector: str) -> list[str]:
    """A selector's comma-separated terms (commas inside ``in (a,b)`` kept)."""
    return [t.strip() for t in re.split(r",(?![^(]*\))", selector) if t.strip()]


def _split_term(term: str) -> tuple[str, str, str]:
    m = re.match(r"^([^!=<>\s]+)\s*(==|!=|=)\s*(.*)$", term)
    if m:
        return m.group(1), m.group(2), m.group(3).strip()
    return term, "", ""


def _label_term(labels: dict[str, str], term: str) -> bool:
    m = re.match(r"^(\S+)\s+(in|notin)\s+\((.*)\)$", term)
    if m:
        values = {v.strip() for v in m.group(3).split(",")}
        present = m.group(1) in labels and labels[m.group(1)] in values
        return present if m.group(2) == "in" else not present
    if term.startswith("!"):
        return term[1:] not in labels
    key, op, value = _split_term(term)
    if not op:
        return key in labels
    return (labels.get(key) == value) == (op in ("=", "=="))
