"""The CRDs the simulated cluster's API server validates against: which kinds it knows, their
schemas (from the CRD files shipped in ``testing/crds/``), and the validation a real API server
does (structural schema: unknown fields, types, required fields, int-or-string)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

# The CRDs as Seldon Core and KServe publish them, shipped as package data (see crds/README.md).
BUNDLED_CRD_DIR = Path(__file__).resolve().parent.parent / "crds"

SELDON_V2 = ("mlops.seldon.io", "v1alpha1")
SELDON_V1 = ("machinelearning.seldon.io", "v1")
KSERVE = ("serving.kserve.io", "v1beta1")
# plural -> (group, version, kind, CRD file)
KINDS: dict[str, tuple[str, str, str, str]] = {
    "models": (*SELDON_V2, "Model", "mlops.seldon.io_models.yaml"),
    "experiments": (*SELDON_V2, "Experiment", "mlops.seldon.io_experiments.yaml"),
    "seldondeployments": (
        *SELDON_V1,
        "SeldonDeployment",
        "machinelearning.seldon.io_seldondeployments.yaml",
    ),
    "inferenceservices": (*KSERVE, "InferenceService", "serving.kserve.io_inferenceservices.yaml"),
}


@functools.lru_cache(maxsize=4)
def load_crds(crd_dir: Path) -> dict[str, dict[str, Any]]:
    """The CustomResourceDefinitions of the known kinds, as their files have them.

    Args:
        crd_dir: the directory holding the CRD YAML files.

    Returns:
        plural -> the CRD (only the kinds whose file exists).
    """
    import yaml

    # The Core 1 CRD is 2.5 MB: libyaml reads it in 0.2 s, the pure-Python loader in seconds.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    out = {}
    for plural, (*_, filename) in KINDS.items():
        path = crd_dir / filename
        if path.is_file():
            out[plural] = yaml.load(path.read_text(), Loader=loader)  # noqa: S506 - a safe loader
    return out


def crd_version(crd: dict[str, Any], version: str) -> dict[str, Any]:
    """One served version of a CRD (its schema, printer columns, subresources).

    Args:
        crd: the CRD.
        version: e.g. ``v1alpha1``.

    Returns:
        The version's entry of ``spec.versions``.
    """
    return next(v for v in crd["spec"]["versions"] if v["name"] == version)


def load_crd_schemas(crd_dir: Path) -> dict[str, dict[str, Any]]:
    """The ``openAPIV3Schema`` of each known kind, from the CRD files.

    Args:
        crd_dir: the directory holding the CRD YAML files.

    Returns:
        plural -> schema (only the kinds whose file exists).
    """
    return {
        plural: crd_version(crd, KINDS[plural][1])["schema"]["openAPIV3Schema"]
        for plural, crd in load_crds(crd_dir).items()
    }


def validate_manifest(plural: str, obj: dict[str, Any], schemas: dict[str, Any]) -> list[str]:
    """Validates an object against its CRD schema, as the API server does (structural schema:
    unknown fields, types, required fields, int-or-string).

    Args:
        plural: e.g. ``models``.
        obj: the object.
        schemas: from :func:`load_crd_schemas`.

    Returns:
        The errors, as ``path: message`` lines (empty: valid).
    """
    schema = schemas.get(plural)
    if schema is None:
        return []
    validator = _validator(schema)
    body = {k: v for k, v in obj.items() if k != "metadata"}
    errors = []
    for err in validator.iter_errors(body):
        errors.extend(_field_errors(err))
    return sorted(set(errors))


def _field_errors(err: Any) -> list[str]:
    """A jsonschema error in the API server's words (``k8s.io/apimachinery``'s field errors):
    ``unknown field "spec.x"`` (strict decoding), ``spec.x: Required value``,
    ``spec.x: Invalid value: "a": spec.x in body must be of type integer: "string"``,
    ``spec.x: Unsupported value: "a": supported values: "b", "c"``."""
    import json

    parts = [str(p) for p in err.absolute_path]
    path = ".".join(parts)
    kind = err.validator
    if kind == "additionalProperties" and isinstance(err.instance, dict):
        known = set(err.schema.get("properties") or {})
        return [
            f'unknown field "{".".join([*parts, k])}"'
            for k in sorted(err.instance)
            if k not in known
        ]
    if kind == "required":
        missing = err.message.split("'")[1] if "'" in err.message else err.message
        return [f"{'.'.join([*parts, missing])}: Required value"]
    value = json.dumps(err.instance)
    if kind == "type":
        given = {dict: "object", list: "array", str: "string", bool: "boolean"}.get(
            type(err.instance), "number" if isinstance(err.instance, float) else "integer"
        )
        if err.instance is None:
            given = "null"
        return [
            f"{path}: Invalid value: {json.dumps(given)}: {path} in body must be of type "
            f"{err.validator_value}: {json.dumps(given)}"
        ]
    if kind == "enum":
        allowed = ", ".join(json.dumps(v) for v in err.validator_value)
        return [f"{path}: Unsupported value: {value}: supported values: {allowed}"]
    return [f"{path or '<root>'}: Invalid value: {value}: {err.message}"]


# id(schema) -> (schema, validator): building one for KServe's 2 MB schema takes ~80 ms.
_VALIDATORS: dict[int, tuple[Any, Any]] = {}


def _validator(schema: dict[str, Any]) -> Any:
    """The strict validator of a schema, built once per schema object."""
    import jsonschema

    cached = _VALIDATORS.get(id(schema))
    if cached is None or cached[0] is not schema:
        cached = (schema, jsonschema.Draft7Validator(_structural(schema)))
        _VALIDATORS[id(schema)] = cached
    return cached[1]


def _structural(schema: Any) -> Any:
    """A structural schema as JSON Schema: unknown fields are errors (the API server prunes or,
    with field validation, rejects them: both lose what the flavor meant to send)."""
    if isinstance(schema, list):
        return [_structural(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _structural(v) for k, v in schema.items() if not k.startswith("x-kubernetes")}
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return out
    if out.get("type") == "object" and "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out
