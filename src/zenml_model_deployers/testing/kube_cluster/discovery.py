"""What the simulated API server says about itself, as a real kube-apiserver does: the API
discovery documents (``/api``, ``/api/v1``, ``/apis``, ``/apis/<group>[/<version>]``) of the
core kinds the flavors use and the installed CRDs (with their short names and categories), the
OpenAPI v3 documents built from the CRD schemas (``/openapi/v3``: what ``kubectl apply`` and
``kubectl explain`` read), ``/version``, and the table rows of ``kubectl get`` (the CRDs'
``additionalPrinterColumns``). Pure functions of the CRDs: no server state."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from zenml_model_deployers.testing.kube_cluster.crds import KINDS, crd_version

# The Kubernetes version the simulated API server reports (kubectl 1.32 talks to it).
SERVER_VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0-zmd-simulated",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2024-12-11T00:00:00Z",
    "goVersion": "go1.23.3",
    "compiler": "gc",
    "platform": "linux/amd64",
}
VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


class CoreKind:
    """A core (``v1``) kind the flavors use: plural, kind, short names, namespaced."""

    def __init__(self, plural: str, kind: str, short: tuple[str, ...], namespaced: bool) -> None:
        """Args: see the class docstring."""
        self.plural, self.kind, self.short, self.namespaced = plural, kind, short, namespaced


CORE_KINDS = {
    k.plural: k
    for k in (
        CoreKind("namespaces", "Namespace", ("ns",), False),
        CoreKind("secrets", "Secret", (), True),
        CoreKind("serviceaccounts", "ServiceAccount", ("sa",), True),
        CoreKind("pods", "Pod", ("po",), True),
        CoreKind("events", "Event", ("ev",), True),
    )
}


def kind_of(plural: str) -> tuple[str, str, str]:
    """(group, version, kind) of a core kind or a known CRD's plural ("" group: core).

    Args:
        plural: e.g. ``secrets`` or ``models``.

    Returns:
        The triple.
    """
    if plural in CORE_KINDS:
        return "", "v1", CORE_KINDS[plural].kind
    group, version, kind, _ = KINDS[plural]
    return group, version, kind


def qualified(plural: str) -> str:
    """The resource as the API server's messages name it: ``secrets``, ``models.mlops.seldon.io``.

    Args:
        plural: the plural.

    Returns:
        The name.
    """
    group = kind_of(plural)[0] if plural in CORE_KINDS or plural in KINDS else ""
    return f"{plural}.{group}" if group else plural


def _resource_entry(
    plural: str, kind: str, names: dict[str, Any], namespaced: bool
) -> dict[str, Any]:
    entry = {
        "name": plural,
        "singularName": names.get("singular") or kind.lower(),
        "namespaced": namespaced,
        "kind": kind,
        "verbs": VERBS,
    }
    if names.get("shortNames"):
        entry["shortNames"] = list(names["shortNames"])
    if names.get("categories"):
        entry["categories"] = list(names["categories"])
    return entry


def core_resources(with_pod_logs: bool) -> dict[str, Any]:
    """``GET /api/v1``: the core kinds the flavors use (and pods' ``log`` subresource).

    Args:
        with_pod_logs: the cluster has a model server pod whose log can be read.

    Returns:
        The APIResourceList.
    """
    resources = []
    for k in CORE_KINDS.values():
        resources.append(_resource_entry(k.plural, k.kind, {"shortNames": k.short}, k.namespaced))
        if k.plural == "pods" and with_pod_logs:
            resources.append(
                {
                    "name": "pods/log",
                    "singularName": "",
                    "namespaced": True,
                    "kind": "Pod",
                    "verbs": ["get"],
                }
            )
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": "v1",
        "resources": resources,
    }


def groups(installed: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``GET /apis``: one group per installed CRD group.

    Args:
        installed: plural -> CRD of the installed kinds.

    Returns:
        The APIGroupList.
    """
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [group(g, installed) for g in _group_versions(installed)],
    }


def group(name: str, installed: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``GET /apis/<group>``.

    Args:
        name: the group.
        installed: plural -> CRD.

    Returns:
        The APIGroup.
    """
    versions = [
        {"groupVersion": f"{name}/{v}", "version": v} for v in _group_versions(installed)[name]
    ]
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": name,
        "versions": versions,
        "preferredVersion": versions[0],
    }


def _group_versions(installed: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for plural in installed:
        g, v, _ = kind_of(plural)
        if v not in out.setdefault(g, []):
            out[g].append(v)
    return out


def group_resources(
    group_name: str, version: str, installed: dict[str, dict[str, Any]]
) -> dict[str, Any] | None:
    """``GET /apis/<group>/<version>``: the CRDs' kinds with their names and ``status``.

    Args:
        group_name: the group.
        version: its version.
        installed: plural -> CRD.

    Returns:
        The APIResourceList, or None: not served.
    """
    resources = []
    for plural, crd in installed.items():
        g, v, kind = kind_of(plural)
        if (g, v) != (group_name, version):
            continue
        resources.append(_resource_entry(plural, kind, crd["spec"]["names"], True))
        if "status" in (crd_version(crd, v).get("subresources") or {}):
            resources.append(
                {
                    "name": f"{plural}/status",
                    "singularName": "",
                    "namespaced": True,
                    "kind": kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
    if not resources:
        return None
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group_name}/{version}",
        "resources": resources,
    }


# ----------------------------------------------------------------- OpenAPI v3
def _schema_id(plural: str) -> str:
    """The OpenAPI name of a kind: the group reversed, e.g. ``io.seldon.mlops.v1alpha1.Model``
    (core: ``io.k8s.api.core.v1.Secret``)."""
    g, v, kind = kind_of(plural)
    if not g:
        return f"io.k8s.api.core.v1.{kind}"
    return ".".join([*reversed(g.split(".")), v, kind])


def _gv_path(plural: str) -> str:
    g, v, _ = kind_of(plural)
    return f"api/{v}" if not g else f"apis/{g}/{v}"


def openapi_paths(installed: dict[str, dict[str, Any]], schemas: dict[str, Any]) -> dict[str, Any]:
    """``GET /openapi/v3``: one document per group version, addressed with its hash.

    Args:
        installed: plural -> CRD.
        schemas: plural -> the schema the server validates against.

    Returns:
        The root document.
    """
    out = {}
    for gv in sorted({_gv_path(p) for p in [*CORE_KINDS, *installed]}):
        doc = openapi_document(gv, installed, schemas)
        digest = hashlib.sha512(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:64].upper()
        out[gv] = {"serverRelativeURL": f"/openapi/v3/{gv}?hash={digest}"}
    return {"paths": out}


def openapi_document(
    gv: str, installed: dict[str, dict[str, Any]], schemas: dict[str, Any]
) -> dict[str, Any] | None:
    """``GET /openapi/v3/<api/v1 | apis/<group>/<version>>``: the kinds' paths (every write
    takes ``fieldValidation`` and ``dryRun``, which kubectl checks before it leaves validation to
    the server) and their schemas (a CRD's own ``openAPIV3Schema``).

    Args:
        gv: ``api/v1`` or ``apis/<group>/<version>``.
        installed: plural -> CRD.
        schemas: plural -> the schema the server validates against.

    Returns:
        The OpenAPI 3 document, or None: no such group version.
    """
    plurals = [p for p in [*CORE_KINDS, *installed] if _gv_path(p) == gv]
    if not plurals:
        return None
    paths: dict[str, Any] = {}
    components: dict[str, Any] = {
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta": {
            "type": "object",
            "description": "Standard object's metadata.",
            "x-kubernetes-preserve-unknown-fields": True,
        },
    }
    query = [
        {"name": n, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
        for n in ("dryRun", "fieldManager", "fieldValidation", "pretty")
    ]
    for plural in plurals:
        g, v, kind = kind_of(plural)
        gvk = {"group": g, "version": v, "kind": kind}
        ref = {"$ref": f"#/components/schemas/{_schema_id(plural)}"}
        ok = {"200": {"description": "OK", "content": {"application/json": {"schema": ref}}}}

        def op(
            action: str,
            params: list[dict[str, Any]],
            ok: dict[str, Any] = ok,
            gvk: dict[str, str] = gvk,
        ) -> dict[str, Any]:
            return {
                "responses": ok,
                "parameters": params,
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
            }

        namespaced = plural not in CORE_KINDS or CORE_KINDS[plural].namespaced
        base = f"/{gv}/namespaces/{{namespace}}/{plural}" if namespaced else f"/{gv}/{plural}"
        paths[base] = {"get": op("list", []), "post": op("post", query)}
        paths[f"{base}/{{name}}"] = {
            "get": op("get", []),
            "put": op("put", query),
            "patch": op("patch", query),
            "delete": op("delete", query[:1]),
        }
        schema = json.loads(json.dumps(schemas.get(plural) or {"type": "object"}))
        schema.setdefault("properties", {})["metadata"] = {
            "$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
        }
        schema["x-kubernetes-group-version-kind"] = [gvk]
        components[_schema_id(plural)] = schema
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": SERVER_VERSION["gitVersion"]},
        "paths": paths,
        "components": {"schemas": components},
    }


# ----------------------------------------------------------------- kubectl get's tables
def table(plural: str, crd: dict[str, Any] | None, objects: list[dict[str, Any]]) -> dict[str, Any]:
    """A ``meta.k8s.io/v1`` Table of objects (what ``kubectl get`` asks for): Name, the CRD's
    ``additionalPrinterColumns`` (simple JSONPaths), Age.

    Args:
        plural: the kind's plural.
        crd: its CRD (None: a core kind).
        objects: the objects.

    Returns:
        The Table.
    """
    cols: list[dict[str, Any]] = []
    if crd is not None:
        cols = crd_version(crd, kind_of(plural)[1]).get("additionalPrinterColumns") or []
    defs = [
        {"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0}
    ]
    defs += [
        {
            "name": c["name"],
            "type": c.get("type", "string"),
            "format": c.get("format", ""),
            "description": c.get("description", ""),
            "priority": c.get("priority", 0),
        }
        for c in cols
        if c.get("type") != "date"
    ]
    defs.append(
        {"name": "Age", "type": "string", "format": "", "description": "Age", "priority": 0}
    )
    rows = []
    for obj in objects:
        cells: list[Any] = [obj["metadata"]["name"]]
        cells += [_jsonpath(obj, c["jsonPath"]) for c in cols if c.get("type") != "date"]
        cells.append(_age(obj["metadata"].get("creationTimestamp")))
        partial = {
            "apiVersion": "meta.k8s.io/v1",
            "kind": "PartialObjectMetadata",
            "metadata": obj["metadata"],
        }
        rows.append({"cells": cells, "object": partial})
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "columnDefinitions": defs,
        "rows": rows,
    }


def _jsonpath(obj: Any, path: str) -> Any:
    """A printer column's JSONPath: ``.a.b``, ``.a[0]``, ``.a[?(@.k=="v")].f`` ("" if absent)."""
    import re

    node: Any = obj
    for step in re.findall(r"\.[^.\[]+|\[[^\]]*\]", path):
        if node is None:
            return ""
        if step.startswith("."):
            node = node.get(step[1:]) if isinstance(node, dict) else None
        elif step.startswith("[?("):
            m = re.match(r'\[\?\(@\.(\w+)\s*==\s*["\']([^"\']*)["\']\)\]', step)
            node = next(
                (x for x in node or [] if m and isinstance(x, dict) and x.get(m[1]) == m[2]),
                None,
            )
        else:
            i = int(step[1:-1]) if step[1:-1].lstrip("-").isdigit() else 0
            node = node[i] if isinstance(node, list) and -len(node) <= i < len(node) else None
    return "" if node is None else node if isinstance(node, (int, float, bool)) else str(node)


def _age(created: str | None) -> str:
    if not created:
        return "<unknown>"
    t = datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    s = int((datetime.now(UTC) - t).total_seconds())
    return f"{s}s" if s < 120 else f"{s // 60}m" if s < 7200 else f"{s // 3600}h"
