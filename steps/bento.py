"""BentoML steps: build a bento from the trained model, deploy it (flavor `zmd-bentoml`).

Importing this module imports BentoML; `zenml_model_deployers.steps` loads it only when one of
these steps is asked for.
"""

from __future__ import annotations

from typing import Annotated, Any

import bentoml
from zenml import log_metadata, step

from zenml_model_deployers.flavors.bentoml.materializer import BentoMaterializer
from zenml_model_deployers.materializer import ServiceMaterializer
from zenml_model_deployers.service import DeploymentService

from ._body import deploy_with, given


@step(enable_cache=False, output_materializers=BentoMaterializer)
def bento_builder_step(
    model: Any,
    service: str,
    model_name: str,
    model_type: str | None = None,
    working_dir: str | None = None,
    include: list[str] | None = None,
    exclude: list[str] | None = None,
    labels: dict[str, str] | None = None,
    description: str | None = None,
    python: dict[str, Any] | None = None,
    docker: dict[str, Any] | None = None,
    version: str | None = None,
) -> Annotated[bentoml.Bento, "bento"]:
    """Saves the model with BentoML's framework saver and builds a bento serving it.

    The bento is built from a clean context: the service module plus `include` files, never
    the whole working directory. Model and bento versions are content digests, so an unchanged
    model and service give the same bento and a redeploy restarts nothing.

    Args:
        model: the trained model (or a `bentoml.Model`).
        service: `my_service.py:MyService`, a BentoML 1.4 `@bentoml.service` class; it loads
            the model as `bentoml.models.BentoModel("<model_name>:latest")` (or by tag).
        model_name: the model's name in the BentoML store (what the service refers to).
        model_type: BentoML framework module (`sklearn`, `pytorch`, ...); default: guessed.
        working_dir: the folder `service` and `include` are relative to (default: cwd).
        include: other files the service needs at serving time (globs).
        exclude: globs left out.
        labels: bento labels.
        description: bento description.
        python: BentoML python options (`packages`, `lock_packages`, ...).
        docker: BentoML docker options (used by containerized deployments).
        version: an explicit bento version (default: the content digest).

    Returns:
        The bento (saved as its exported archive, models included).
    """
    from zenml_model_deployers.flavors.bentoml.packaging import build_bento, save_model

    model_tag = save_model(model, model_name, model_type)
    tag = build_bento(
        service,
        [model_tag],
        working_dir=working_dir,
        include=include,
        exclude=exclude,
        labels=labels,
        description=description,
        python=python,
        docker=docker,
        version=version,
    )
    log_metadata(metadata={"bento_tag": tag, "bentoml_model": model_tag})
    return bentoml.bentos.get(tag)


@step(enable_cache=False, output_materializers=ServiceMaterializer)
def bentoml_deployer_step(
    bento: bentoml.Bento | None = None,
    bento_tag: str | None = None,
    deployment_name: str | None = None,
    model_name: str = "",
    api: str | None = None,
    deploy_decision: bool = True,
    policy: str = "update",
    timeout: float | None = None,
    port: int | None = None,
    env: dict[str, str] | None = None,
    api_key: str | None = None,
    args: dict[str, str] | None = None,
    smoke_input: Any = None,
    containerize: bool = False,
    image: str | None = None,
) -> Annotated[DeploymentService, "bentoml_deployment"]:
    """Serves a bento locally with `bentoml serve` behind a stable URL (flavor `zmd-bentoml`).

    A new bento on a later run updates the deployment in place: the old server answers until
    the new one is ready (BentoML's `/readyz`), then the URL moves to it.

    Args:
        bento: the bento (e.g. `bento_builder_step`'s output), or None with `bento_tag`.
        bento_tag: a bento in the local store (`name:version`; `name` means its latest).
        deployment_name: stable name (default: derived from the model name or bento name).
        model_name: the model's name.
        api: the API `predict()` and the recorded URL use (default: the bento's first).
        deploy_decision: False keeps what serves now.
        policy: update (default), replace, side_by_side or fail.
        timeout: seconds to wait until it serves.
        port: pin the public port (default: a free one, kept across updates).
        env: server environment; values may be `{{secret.key}}` references.
        api_key: a `{{secret.key}}` reference to the key every request to the URL must
            carry as `Authorization: Bearer <key>` (None: no key).
        args: bento arguments (`bentoml serve --arg`).
        smoke_input: example input that must predict before the revision counts as ready.
        containerize: serve the bento's image in a local Docker engine (needs one).
        image: the image to run when containerized (default: built with `bentoml containerize`).

    Returns:
        The service (saved in full as an artifact).
    """
    from zenml_model_deployers.errors import ConfigurationError

    if (bento is None) == (bento_tag is None):
        raise ConfigurationError("Give exactly one of `bento` or `bento_tag`.")
    tag = str(bento.tag) if bento is not None else str(bento_tag)
    settings: dict[str, Any] = {
        "port": port,
        "env": env or {},
        "args": args or {},
        "api": api,
        "containerize": containerize,
        "image": image,
        **given(api_key=api_key),
    }
    return deploy_with(
        "zmd-bentoml",
        model_uri=tag,
        deployment_name=deployment_name,
        model_name=model_name or tag.split(":")[0],
        deploy_decision=deploy_decision,
        policy=policy,
        timeout=timeout,
        settings=settings,
        smoke_input=smoke_input,
    )
