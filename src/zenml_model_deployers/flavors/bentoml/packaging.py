"""Bentos: save a trained model with BentoML's framework saver, build a bento, resolve a tag.

Everything is content-addressed: the same fitted model saves to the same model version and
the same service sources + model + options build to the same bento version, so re-running a
pipeline with an unchanged model redeploys nothing. The bento is built from a clean context
holding only the service module and the files the user includes, never the whole working
directory (which may hold BentoML's own store or large data).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from zenml_model_deployers.errors import ConfigurationError, DeploymentError

# Framework savers BentoML ships, keyed by the model's top-level module.
_SAVERS = {
    "sklearn": "sklearn",
    "xgboost": "xgboost",
    "lightgbm": "lightgbm",
    "catboost": "catboost",
    "torch": "pytorch",
    "keras": "keras",
    "tensorflow": "tensorflow",
    "transformers": "transformers",
}

GENERIC_SERVICE = '''"""Serves one saved model's `predict` (written by zenml-model-deployers)."""

import importlib
from typing import Annotated

import bentoml
import numpy as np
import pandas as pd

MODEL_TAG = {tag!r}


@bentoml.service(name={service_name!r})
class ZmdModelService:
    model_ref = bentoml.models.BentoModel(MODEL_TAG)

    def __init__(self) -> None:
        saver = importlib.import_module(bentoml.models.get(MODEL_TAG).info.module)
        self.model = saver.load_model(self.model_ref)

    @bentoml.api
    def predict(self, input_data: {input_type}) -> np.ndarray:
        return np.asarray(self.model.predict({model_input}))
'''

# The generated service's input: a DataFrame in records orient where the model's signature
# names columns, else an array (cast to the signature's dtype, e.g. a PyTorch module's float32:
# JSON numbers arrive as float64, which MLflow's schema enforcement refuses for float32).
_DATAFRAME_INPUT = (
    "Annotated[pd.DataFrame, bentoml.validators.DataframeSchema(orient='records', "
    "columns={columns!r})]"
)


class RouteInfo(BaseModel):
    """One API of a bento, as its schema declares it.

    Attributes:
        route: the URL path (e.g. `/classify`).
        inputs: parameter name -> its JSON schema (type, format, orient...).
        required: the required parameter names.
    """

    route: str
    inputs: dict[str, dict[str, Any]] = {}
    required: list[str] = []


class BentoInfo(BaseModel):
    """What a deploy needs to know of a bento in the local store.

    Attributes:
        tag: the concrete tag (`name:version`, never `latest`).
        path: the bento's folder in the store.
        routes: API name -> route info.
        models: tag -> folder of each model the bento serves, as pinned when it was built.
    """

    tag: str
    path: str
    routes: dict[str, RouteInfo]
    models: dict[str, str] = {}


def _bentoml_message(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


def resolve_bento(tag: str) -> BentoInfo:
    """Finds a bento in the local BentoML store and reads its APIs (no server start).

    Args:
        tag: `name:version` or `name` / `name:latest`.

    Returns:
        The bento's concrete tag, its routes and its models.

    Raises:
        ConfigurationError: the bento, or a model it serves, is not in the store.
    """
    import bentoml
    from bentoml.exceptions import BentoMLException

    try:
        bento = bentoml.bentos.get(tag)
    except BentoMLException as e:
        restored = restore_from_artifact(tag)
        if restored is None:
            raise ConfigurationError(
                f"Bento '{tag}' is not in the local BentoML store, so nothing was started.",
                backend_message=_bentoml_message(e),
                hint="build it first (`bento_builder_step` or `bentoml build`), or check the "
                f"tag with `BENTOML_HOME={os.environ.get('BENTOML_HOME', '~/bentoml')} bentoml list`.",
            ) from e
        bento = restored
    info = bento.info
    models = sorted({str(m.tag) for s in info.services for m in s.models})
    models += [str(m.tag) for m in info.models if str(m.tag) not in models]
    model_paths = {}
    for model_tag in models:
        try:
            model_paths[model_tag] = str(bentoml.models.get(model_tag).path)
        except BentoMLException as e:
            raise ConfigurationError(
                f"Bento '{bento.tag}' serves model '{model_tag}', which is not in the local "
                "BentoML model store.",
                backend_message=_bentoml_message(e),
                hint="import the bento with its models (`bentoml import <file>.bento`) "
                "or rebuild it.",
            ) from e
    routes: dict[str, RouteInfo] = {}
    schema = info.schema or {}
    for r in schema.get("routes", []):
        inp = r.get("input") or {}
        routes[r["name"]] = RouteInfo(
            route=r.get("route") or f"/{r['name']}",
            inputs=inp.get("properties") or {},
            required=list(inp.get("required") or []),
        )
    if not routes:
        raise ConfigurationError(
            f"Bento '{bento.tag}' declares no HTTP API that zmd-bentoml can call.",
            hint="serve a BentoML >= 1.2 `@bentoml.service` class with at least one "
            "`@bentoml.api` method.",
        )
    return BentoInfo(tag=str(bento.tag), path=str(bento.path), routes=routes, models=model_paths)


def pinned_store(info: BentoInfo, root: Path) -> Path:
    """A BentoML home holding only this bento and the model versions it was built with.

    A service that loads `BentoModel("name:latest")` resolves `latest` at serving time against
    its BentoML home. Served from the shared store, an older bento would load whatever model
    was saved last, so a restart, a rollback or a recreate of an old revision would serve a
    newer (maybe rejected) model. In this home `latest` is the pinned version, as it is inside
    the bento's container image. Entries are symlinks: nothing is copied.

    Args:
        info: the resolved bento.
        root: the folder to make the home in (one per bento version).

    Returns:
        The home's path (for the server's BENTOML_HOME).
    """
    name, version = info.tag.split(":", 1)
    home = root / f"store-{version}"
    entries = [(f"bentos/{name}", version, info.path)]
    entries += [
        (f"models/{t.split(':')[0]}", t.split(":", 1)[1], p) for t, p in info.models.items()
    ]
    for folder, ver, target in entries:
        where = home / folder
        where.mkdir(parents=True, exist_ok=True)
        link = where / ver
        if not link.is_symlink():
            link.symlink_to(target, target_is_directory=True)
        (where / "latest").write_text(ver)
    return home


def restore_from_artifact(tag: str) -> Any:
    """Imports a bento that a pipeline run built (its `bento` artifact) back into the store.

    So a recorded deployment can be recreated, or a stopped one started, on a machine or a
    store that lacks the bento, as long as the run's artifact store is reachable.

    Args:
        tag: a concrete `name:version` tag.

    Returns:
        The imported `bentoml.Bento`, or None when no artifact of a run holds it.
    """
    import logging

    from zenml.client import Client

    if ":" not in tag or tag.endswith(":latest"):
        return None
    try:
        # ZenML's filter is "key:op:value"; the tag has a colon of its own, hence `contains`
        # and the exact check below.
        page = Client().list_artifact_versions(
            run_metadata=[f"bento_tag:contains:{tag}"], size=10, hydrate=True
        )
    except Exception:  # a store without the filter: nothing to restore from
        return None
    found = [a for a in page.items if a.run_metadata.get("bento_tag") == tag]
    if not found:
        return None
    bento = found[0].load()
    logging.getLogger(__name__).info(
        "Bento '%s' was not in the local store: imported it from artifact %s (version %s).",
        tag,
        found[0].name,
        found[0].version,
    )
    return bento


def _framework(model: Any, model_type: str | None) -> str:
    if model_type:
        return model_type.removeprefix("bentoml.")
    top = type(model).__module__.split(".")[0]
    if top in _SAVERS:
        return _SAVERS[top]
    raise ConfigurationError(
        f"Cannot tell which BentoML framework saver fits a {type(model).__module__}."
        f"{type(model).__name__}.",
        hint="pass model_type= (e.g. 'sklearn', 'pytorch', 'xgboost'); see BentoML's "
        "framework APIs.",
    )


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(hashlib.sha256(p).digest())
    # BentoML versions are lowercase alphanumerics; a hex prefix fits.
    return h.hexdigest()[:16]


def save_model(model: Any, model_name: str, model_type: str | None = None) -> str:
    """Saves a trained model with BentoML's framework saver (once per fitted state).

    Args:
        model: the trained model; a `bentoml.Model` is returned as is.
        model_name: the model's name in the store (what the service's BentoModel refers to).
        model_type: BentoML framework module (`sklearn`, `pytorch`, ...); default: guessed.

    Returns:
        The model's tag.

    Raises:
        ConfigurationError: no framework saver fits.
        DeploymentError: BentoML failed to save.
    """
    import importlib

    import bentoml
    from bentoml.exceptions import BentoMLException, NotFound

    if isinstance(model, bentoml.Model):
        return str(model.tag)
    framework = _framework(model, model_type)
    try:
        saver = importlib.import_module(f"bentoml.{framework}")
    except ImportError as e:
        raise ConfigurationError(
            f"BentoML has no framework module 'bentoml.{framework}' here.",
            backend_message=str(e),
            hint="install the framework, or pass another model_type.",
        ) from e
    from zenml_model_deployers.packaging.digest import value_pickle

    try:
        # By value (as model_digest): the copy a pipeline step gets saves to the same version.
        state = value_pickle(model)
    except Exception:  # not picklable: every run saves a new version
        import uuid

        state = uuid.uuid4().bytes
    version = _digest(state, framework.encode(), bentoml.__version__.encode())
    tag = f"{model_name}:{version}"
    try:
        return str(bentoml.models.get(tag).tag)
    except NotFound:
        pass
    try:
        return str(saver.save_model(tag, model).tag)
    except BentoMLException as e:
        raise DeploymentError(
            f"BentoML could not save model '{model_name}' with bentoml.{framework}.",
            backend_message=_bentoml_message(e),
        ) from e


def _service_file(service: str, working_dir: Path) -> tuple[Path, str]:
    """Maps `my_service.py:MyService` or `my_service:MyService` to (file, BentoML import path)."""
    if ":" not in service:
        raise ConfigurationError(
            f"service={service!r} does not name a class.",
            hint="use 'my_service.py:MyService' (file relative to the working dir, then class).",
        )
    module, cls = service.rsplit(":", 1)
    rel = module if module.endswith(".py") else module.replace(".", "/") + ".py"
    path = (working_dir / rel).resolve()
    if not path.is_file():
        raise ConfigurationError(
            f"Service module {rel} was not found in {working_dir}.",
            hint="pass working_dir= (the folder the service path is relative to).",
        )
    import_path = Path(rel).with_suffix("").as_posix().replace("/", ".")
    return path, f"{import_path}:{cls}"


def build_bento(
    service: str,
    model_tags: list[str],
    *,
    working_dir: str | None = None,
    include: list[str] | None = None,
    exclude: list[str] | None = None,
    labels: dict[str, str] | None = None,
    description: str | None = None,
    python: dict[str, Any] | None = None,
    docker: dict[str, Any] | None = None,
    envs: list[dict[str, str]] | None = None,
    version: str | None = None,
) -> str:
    """Builds a bento from a clean context (service module + included files), once per content.

    Args:
        service: `path/to/module.py:ServiceClass`, relative to `working_dir`.
        model_tags: models the bento serves (beyond those its service declares).
        working_dir: where the service path and `include` globs are relative to (default cwd).
        include: extra files (globs) the service needs at serving time.
        exclude: globs left out of the bento.
        labels: bento labels.
        description: bento description.
        python: BentoML python options (packages, lock_packages...).
        docker: BentoML docker options.
        envs: environment variables baked into the bento.
        version: an explicit version (default: a digest of everything above).

    Returns:
        The bento's tag.

    Raises:
        ConfigurationError: the service module or an include is missing.
        DeploymentError: BentoML failed to build (its own message attached).
    """
    import bentoml
    from bentoml.exceptions import BentoMLException

    root = Path(working_dir or ".").resolve()
    svc_path, import_path = _service_file(service, root)
    files = {svc_path.relative_to(root).as_posix(): svc_path}
    for pattern in include or []:
        matches = [Path(p) for p in glob.glob(str(root / pattern), recursive=True)]
        if not matches:
            raise ConfigurationError(
                f"include pattern {pattern!r} matches nothing in {root}.",
                hint="patterns are relative to working_dir.",
            )
        for m in matches:
            for f in [m] if m.is_file() else [p for p in m.rglob("*") if p.is_file()]:
                files[f.resolve().relative_to(root).as_posix()] = f
    options = {
        "labels": labels or {},
        "description": description,
        "python": python,
        "docker": docker,
        "envs": envs,
        "exclude": exclude,
        "models": sorted(model_tags),
    }
    digest = _digest(
        *(name.encode() + b"\0" + files[name].read_bytes() for name in sorted(files)),
        json.dumps(options, sort_keys=True, default=str).encode(),
        import_path.encode(),
        bentoml.__version__.encode(),
    )
    if version is None:
        version = digest
        for existing in bentoml.bentos.list():
            # Same content was built before (the name comes from the service class).
            if existing.tag.version == version:
                return str(existing.tag)
    with tempfile.TemporaryDirectory(prefix="zmd-bento-") as tmp:
        ctx = Path(tmp)
        for name, src in files.items():
            (ctx / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, ctx / name)
        # The name comes from the service class; find an existing build of this content first.
        try:
            bento = bentoml.bentos.build(
                service=import_path,
                build_ctx=str(ctx),
                version=version,
                labels=labels,
                description=description,
                exclude=exclude,
                python=python,
                docker=docker,
                envs=envs,  # type: ignore[arg-type]
                models=list(model_tags) or None,
            )
        except BentoMLException as e:
            if "already exists" in str(e) and version == digest:
                # Same content, built meanwhile: BentoML refuses to overwrite a bento.
                return _existing_tag(str(e), version)
            locking = "lock PyPI packages" in str(e)
            raise DeploymentError(
                f"BentoML could not build a bento from {service}.",
                backend_message=_bentoml_message(e),
                hint="BentoML locks the bento's requirements against the package index, which "
                "did not answer: pass python={'lock_packages': False} (locked requirements only "
                "matter for container images)."
                if locking
                else "check that the service module imports and names the models it loads.",
            ) from e
        except (ImportError, SyntaxError, AttributeError) as e:
            raise DeploymentError(
                f"BentoML could not import {service} to build the bento.",
                backend_message=_bentoml_message(e),
                hint="fix the service module; files it imports must be passed in include=.",
            ) from e
        return str(bento.tag)


def _existing_tag(message: str, version: str) -> str:
    import re

    m = re.search(r"'([\w.-]+):" + re.escape(version) + "'", message)
    if not m:
        raise DeploymentError(
            "BentoML refused to build a bento that exists.", backend_message=message
        )
    return f"{m.group(1)}:{version}"


def build_generic_bento(
    model_tag: str,
    name: str,
    input_columns: list[str] | None = None,
    input_dtype: str | None = None,
    packages: list[str] | None = None,
) -> str:
    """Builds a bento serving one saved model's `predict` (for `model_deployer_step(model=...)`).

    Its one API, `predict`, takes `input_data`: records (`[{"col": value, ...}, ...]`) when
    `input_columns` is given, else an array (a list per row). Its requirements are `packages`
    as given, not locked against the package index: zmd-bentoml serves bentos in this
    environment, and locking asked the index on every build (4-5 s; the build is 0.2 s without).

    Args:
        model_tag: the saved model's tag.
        name: the bento's name (the deployment name).
        input_columns: the columns the model's signature names (a DataFrame input).
        input_dtype: the dtype an array input is cast to (a tensor signature's).
        packages: the model's requirements (what a containerized bento installs).

    Returns:
        The bento's tag.
    """
    if input_columns:
        input_type, model_input = _DATAFRAME_INPUT.format(columns=input_columns), "input_data"
    else:
        input_type = "np.ndarray"
        model_input = f"input_data.astype({input_dtype!r})" if input_dtype else "input_data"
    source = GENERIC_SERVICE.format(
        tag=model_tag,
        service_name=name.replace("-", "_"),
        input_type=input_type,
        model_input=model_input,
    )
    # A module name of its own per source: BentoML imports the service to build the bento, and
    # a second build in this process under a shared name got the first one's cached module
    # (another deployment's service name and API).
    module = f"zmd_service_{hashlib.sha256(source.encode()).hexdigest()[:12]}"
    with tempfile.TemporaryDirectory(prefix="zmd-svc-") as tmp:
        (Path(tmp) / f"{module}.py").write_text(source)
        return build_bento(
            f"{module}.py:ZmdModelService",
            [model_tag],
            working_dir=tmp,
            python={"packages": sorted(packages or []), "lock_packages": False},
        )


def docker_engine_error() -> str | None:
    """Says why no Docker engine can be used, or None when one answers.

    Returns:
        The reason, or None.
    """
    import subprocess

    exe = shutil.which("docker")
    if exe is None:
        return "the `docker` command is not installed"
    try:
        out = subprocess.run(
            [exe, "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=15,
        )
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 15 s"
    if out.returncode != 0 or not out.stdout.strip():
        said = (out.stderr or out.stdout).strip().splitlines()
        return said[-1] if said else "`docker info` failed"
    return None
