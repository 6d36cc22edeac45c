"""The shared Kubernetes runtime (kube/) through the real `kubernetes` client against the
simulated cluster: connection errors, preconditions, ownership, merge patches validated by the
CRD schemas, bounded waits with the controller's reason, Secrets, content-addressed uploads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kube_support import api_only, cluster, sklearn_model  # noqa: F401

from zenml_model_deployers.errors import (
    ConfigurationError,
    DeploymentError,
    DeploymentExistsError,
    DeploymentTimeoutError,
)
from zenml_model_deployers.flavors.seldon.backend import MODEL
from zenml_model_deployers.kube.client import KubeTarget
from zenml_model_deployers.kube.objects import (
    LABEL_MANAGED_BY,
    Verdict,
    ownership_labels,
    selector_for,
)
from zenml_model_deployers.kube.resources import KubeNamespace
from zenml_model_deployers.testing.kube_cluster import SimulatedCluster


def _ns(c: SimulatedCluster, deployment: str, namespace: str | None = None) -> KubeNamespace:
    target = KubeTarget(kubeconfig=c.kubeconfig, namespace=namespace or c.namespace)
    return KubeNamespace(target, deployment)


def _model(name: str, uri: str, owner: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if owner:
        meta["labels"] = ownership_labels(owner, 1, "h")
    return {
        "apiVersion": "mlops.seldon.io/v1alpha1",
        "kind": "Model",
        "metadata": meta,
        "spec": {"storageUri": uri, "requirements": ["sklearn"]},
    }


def _ready(obj: dict[str, Any] | None) -> Verdict:
    if obj is None:
        return Verdict(reason="absent")
    status = obj.get("status") or {}
    if int(status.get("observedGeneration") or 0) < int(obj["metadata"].get("generation") or 1):
        return Verdict(reason="not observed yet")
    for cond in status.get("conditions") or []:
        if cond["type"] == "ModelReady":
            if cond["status"] == "True":
                return Verdict(done=True)
            if cond["reason"] == "ModelFailed":
                return Verdict(failed=True, reason=cond["message"])
            return Verdict(reason=cond["reason"])
    return Verdict(reason="no conditions")


def test_missing_kubeconfig_names_the_path(tmp_path: Path) -> None:
    """No kubeconfig: a ConfigurationError naming the file it looked for."""
    missing = tmp_path / "nowhere" / "config"
    ns = KubeNamespace(KubeTarget(kubeconfig=str(missing)), "x")
    with pytest.raises(ConfigurationError, match=str(missing)):
        ns.check_ready([MODEL])


def test_unknown_context_is_refused(api_only: SimulatedCluster) -> None:  # noqa: F811
    """A context the kubeconfig lacks: refused with the fix (list the contexts)."""
    target = KubeTarget(kubeconfig=api_only.kubeconfig, context="prod-eu")
    with pytest.raises(ConfigurationError, match="prod-eu") as err:
        KubeNamespace(target, "x").check_ready([MODEL])
    assert "get-contexts" in str(err.value)


def test_missing_namespace_and_missing_seldon(api_only: SimulatedCluster) -> None:  # noqa: F811
    """A namespace that does not exist, then an API group that is not installed."""
    with pytest.raises(ConfigurationError, match="Namespace 'nope' does not exist"):
        _ns(api_only, "x", "nope").check_ready([MODEL])
    with pytest.raises(ConfigurationError, match="Seldon Core 2 is not installed in this cluster"):
        _ns(api_only, "x").check_ready([MODEL])


def test_rbac_refusal_names_verb_and_resource(cluster: SimulatedCluster) -> None:  # noqa: F811
    """A 403 carries the API server's words: the verb and the resource refused."""
    cluster.forbid("create", "models")
    try:
        with pytest.raises(DeploymentError, match="403") as err:
            _ns(cluster, "rbac").create(MODEL, _model("rbac", "/x", owner="rbac"))
    finally:
        cluster.allow_all()
    assert 'cannot create resource "models"' in str(err.value)
    assert "RBAC" in str(err.value)


def test_schema_rejects_what_a_real_server_would(cluster: SimulatedCluster) -> None:  # noqa: F811
    """A field the CRD does not have is refused (400, strict decoding), a value of the wrong
    type too (422 Invalid): in the API server's own words."""
    ns = _ns(cluster, "schema")
    bad = _model("schema", "/x", owner="schema")
    bad["spec"]["replica"] = 2  # typo of `replicas`
    with pytest.raises(DeploymentError, match="400") as err:
        ns.create(MODEL, bad)
    assert 'strict decoding error: unknown field "spec.replica"' in str(err.value)
    assert ns.get(MODEL, "schema") is None
    bad["spec"] = {**bad["spec"], "replica": None, "replicas": "two"}
    del bad["spec"]["replica"]
    with pytest.raises(DeploymentError, match="422") as err:
        ns.create(MODEL, bad)
    assert (
        'Model.mlops.seldon.io "schema" is invalid: spec.replicas: Invalid value: "string": '
        'spec.replicas in body must be of type integer: "string"'
    ) in str(err.value)
    assert ns.get(MODEL, "schema") is None


def test_objects_we_do_not_own_are_never_touched(
    cluster: SimulatedCluster,  # noqa: F811
    tmp_path: Path,
) -> None:
    """An object of the same name without our labels: refused, and left as it was."""
    foreign = _ns(cluster, "someone-else")
    foreign.create(MODEL, _model("taken", str(tmp_path)))
    ours = _ns(cluster, "taken")
    with pytest.raises(DeploymentExistsError, match="does not own it"):
        ours.get_owned(MODEL, "taken")
    assert ours.list_owned(MODEL) == []
    sent = [r for r in cluster.log.requests if r["verb"] == "list" and r["params"]]
    assert sent[-1]["params"]["labelSelector"] == selector_for("taken")
    assert LABEL_MANAGED_BY in sent[-1]["params"]["labelSelector"]
    assert foreign.delete(MODEL, "taken") is True
    assert foreign.delete(MODEL, "taken") is False  # idempotent


def test_create_patch_wait_and_failure_reason(
    cluster: SimulatedCluster,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A merge patch bumps the generation; the wait follows it and ends with the controller's
    own reason when the model cannot load; a too-short wait is a timeout naming what it saw."""
    import joblib

    joblib.dump(sklearn_model(1), tmp_path / "model.joblib")
    ns = _ns(cluster, "waits")
    created = ns.create(MODEL, _model("waits", str(tmp_path), owner="waits"))
    assert created["metadata"]["generation"] == 1
    done = ns.wait_for(MODEL, "waits", _ready, 60, "Model 'waits'")
    assert done is not None and done["status"]["observedGeneration"] == 1
    patched = ns.merge_patch(MODEL, "waits", {"spec": {"storageUri": str(tmp_path / "missing")}})
    assert patched["metadata"]["generation"] == 2
    with pytest.raises(DeploymentError) as err:
        ns.wait_for(MODEL, "waits", _ready, 60, "Model 'waits' update")
    # Seldon's agent finds nothing to copy at the URI: its own words.
    assert "Failed to download from" in (err.value.backend_message or "")
    ns.merge_patch(MODEL, "waits", {"spec": {"storageUri": str(tmp_path / "slow")}})
    with pytest.raises(DeploymentTimeoutError, match="did not finish within"):
        ns.wait_for(MODEL, "waits", lambda o: Verdict(reason="still loading"), 0.5, "slow")
    assert ns.delete(MODEL, "waits")


def test_wait_falls_back_to_polling_when_watch_is_refused(
    cluster: SimulatedCluster,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Without the watch verb (RBAC), a wait still ends by reading the object again."""
    import joblib

    joblib.dump(sklearn_model(0), tmp_path / "model.joblib")
    ns = _ns(cluster, "polls")
    cluster.forbid("watch", "models")
    try:
        ns.create(MODEL, _model("polls", str(tmp_path), owner="polls"))
        done = ns.wait_for(MODEL, "polls", _ready, 60, "Model 'polls'", poll_interval=0.2)
    finally:
        cluster.allow_all()
    assert done is not None and _ready(done).done
    refused = [r for r in cluster.log.requests if r["verb"] == "watch" and r["plural"] == "models"]
    assert refused, "the wait tried to watch first"
    assert ns.delete(MODEL, "polls")


def test_owned_secret_created_updated_and_deleted(cluster: SimulatedCluster) -> None:  # noqa: F811
    """A Secret made for a deployment carries our labels; delete removes ours only."""
    from zenml_model_deployers.kube.secrets import apply_secret, delete_owned

    ns = _ns(cluster, "sec")
    labels = ownership_labels("sec", 1, "h", role="storage")
    apply_secret(ns, "sec-storage", {"a": "1", "b": "2"}, labels)
    apply_secret(ns, "sec-storage", {"a": "3"}, labels)
    other = _ns(cluster, "other")
    apply_secret(other, "other-storage", {"x": "y"}, ownership_labels("other", 1, "h"))
    stored = {s["metadata"]["name"]: s for s in cluster.objects("secrets")}
    assert set(stored["sec-storage"]["data"]) == {"a"}  # the removed key is gone
    with pytest.raises(DeploymentExistsError):
        apply_secret(ns, "other-storage", {"x": "z"}, labels)
    assert delete_owned(ns, "Secret") == ["sec-storage"]
    names = {s["metadata"]["name"] for s in cluster.objects("secrets")}
    assert names == {"other-storage"}
    delete_owned(other, "Secret")


def test_upload_is_content_addressed(zenml_env: Path) -> None:
    """The same model uploads to the same URI (once); another model to another URI."""
    from zenml_model_deployers.kube.storage import MARKER, upload_model

    first = upload_model(sklearn_model(0), "sklearn", "addr")
    again = upload_model(sklearn_model(0), "sklearn", "addr")
    other = upload_model(sklearn_model(1), "sklearn", "addr")
    assert first == again != other
    assert (Path(first) / "model.joblib").is_file() and (Path(first) / MARKER).is_file()
    with pytest.raises(ConfigurationError, match=r"cannot package a builtins\.object"):
        upload_model(object(), "sklearn", "addr")


def test_the_package_ships_the_crds_with_their_provenance(tmp_path: Path) -> None:
    """A clone or a wheel needs nothing beside it: the simulated cluster validates against the
    CRDs the package carries, each listed with its origin and license; a folder of a user's own
    CRDs still overrides them, and one that lacks a kind names the file it expects."""
    import hashlib

    import zenml_model_deployers
    from zenml_model_deployers.testing.kube_cluster import (
        BUNDLED_CRD_DIR,
        KINDS,
        load_crd_schemas,
    )

    assert BUNDLED_CRD_DIR.is_relative_to(Path(zenml_model_deployers.__file__).parent)
    assert set(load_crd_schemas(BUNDLED_CRD_DIR)) == set(KINDS)
    notes = (BUNDLED_CRD_DIR / "README.md").read_text()
    for _, _, _, filename in KINDS.values():
        digest = hashlib.sha256((BUNDLED_CRD_DIR / filename).read_bytes()).hexdigest()
        assert f"{digest}  {filename}" in notes, filename
    assert "Apache License 2.0" in notes and "Business Source License 1.1" in notes

    own = tmp_path / "crds"
    own.mkdir()
    (own / KINDS["models"][3]).write_bytes((BUNDLED_CRD_DIR / KINDS["models"][3]).read_bytes())
    assert SimulatedCluster(own, install=("models",), model_server=False).crd_dir == own
    with pytest.raises(FileNotFoundError, match="serving.kserve.io_inferenceservices.yaml"):
        SimulatedCluster(own, install=("inferenceservices",), model_server=False)


@pytest.mark.parametrize("flavor", ["seldon", "kserve"])
def test_a_service_saved_before_its_config_class_moved_still_loads(flavor: str) -> None:
    """The cluster flavors' deployment configs moved from service.py to config.py: a service
    saved before (its config's `type` names the old module) still loads, and the old import
    path gives the same class; the config annotation written to the cluster names the class
    as before the move, so an object written then needs no patch now."""
    import importlib
    import uuid

    from zenml_model_deployers.kube.objects import ANNOTATION_CONFIG
    from zenml_model_deployers.materializer import service_from_json, service_to_json

    prefix = "KServe" if flavor == "kserve" else "Seldon"
    service_mod = importlib.import_module(f"zenml_model_deployers.flavors.{flavor}.service")
    config_mod = importlib.import_module(f"zenml_model_deployers.flavors.{flavor}.config")
    config_cls = getattr(config_mod, f"{prefix}DeploymentConfig")
    assert getattr(service_mod, f"{prefix}DeploymentConfig") is config_cls
    old = f"zenml_model_deployers.flavors.{flavor}.service.{prefix}DeploymentConfig"
    config = config_cls(deployment_name="iris", model_uri="gs://models/iris")
    service = getattr(service_mod, f"{prefix}DeploymentService")(
        uuid=uuid.uuid4(),
        config=config,
        status=getattr(service_mod, f"{prefix}DeploymentStatus")(),
    )
    saved = json.loads(json.dumps(service_to_json(service)))
    saved["service"]["config"]["type"] = old
    loaded = service_from_json(saved, prefer_live=False)
    assert type(loaded.config) is config_cls and loaded.config == config
    _, annotations = service.revision_metadata(config, 1)
    assert json.loads(annotations[ANNOTATION_CONFIG])["type"] == old
