"""zmd-databricks beyond the conformance suite, against the serving-endpoints double through
the real databricks-sdk: failed update, canary routes + promote/rollback (CLI), stop/start
semantics, Databricks' errors, OAuth service principals, input forms, and the credential leak
scan (artifact, metadata, store, logs, errors, the double's request log)."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from click.testing import CliRunner
from dbx_support import (  # noqa: F401
    CLIENT_ID,
    CLIENT_SECRET_REF,
    EXPECTED,
    SAMPLE,
    dbx_component,
    dbx_deployer,
    dbx_double,
    dbx_registry,
    dbx_stack,
    planted_credentials,
    uri,
)
from doc_transcripts import assert_same_shape, expected

from zenml_model_deployers.cli import main as zmd
from zenml_model_deployers.errors import (
    ConfigurationError,
    DeploymentError,
    DeploymentExistsError,
)
from zenml_model_deployers.flavors.databricks.config import DatabricksDeploymentConfig
from zenml_model_deployers.flavors.databricks.service import DatabricksDeploymentService
from zenml_model_deployers.testing.databricks_double import DatabricksDouble

TIMEOUT = 30.0


def _cfg(name: str, variant: str, **kw: Any) -> DatabricksDeploymentConfig:
    return DatabricksDeploymentConfig(
        deployment_name=name, model_name=name, model_uri=uri(variant), **kw
    )


def _routes(double: DatabricksDouble, name: str) -> dict[str, int]:
    ep = double.endpoint(name)
    assert ep is not None
    return {
        r["served_entity_name"]: r["traffic_percentage"]
        for r in ep["config"]["traffic_config"]["routes"]
    }


def test_failed_config_update_leaves_previous_entity_serving(
    dbx_deployer: Any,  # noqa: F811
    dbx_double: DatabricksDouble,  # noqa: F811
) -> None:
    d = dbx_deployer
    svc = d.deploy(_cfg("dbx-fail", "a", tags={"team": "ml"}), timeout=TIMEOUT)
    entity = svc.config.served_entity_name
    dbx_double.fail_next_update = "Container build failed: pip could not resolve 'torch==0.0.1'."
    with pytest.raises(DeploymentError) as ei:
        d.deploy(_cfg("dbx-fail", "b", tags={"team": "ml"}), timeout=TIMEOUT)
    msg = str(ei.value)
    # Databricks' own words first, then what zmd did about it.
    assert "UPDATE_FAILED" in msg.splitlines()[0]
    assert "pip could not resolve 'torch==0.0.1'" in msg
    assert "put back on the previous revision" in msg
    assert _routes(dbx_double, "dbx-fail") == {entity: 100}
    again = d.find_deployment("dbx-fail")
    assert again.config.model_uri == uri("a") and again.status.state.value == "active"
    assert again.predict(SAMPLE) == EXPECTED["a"]
    ep = dbx_double.endpoint("dbx-fail")
    assert {t["key"]: t["value"] for t in ep["tags"]} == {
        "team": "ml",
        "zmd-deployment": "dbx-fail",
    }
    d.delete(again)
    assert dbx_double.endpoint("dbx-fail") is None


def test_canary_routes_promote_and_rollback_from_the_cli(
    dbx_deployer: Any,  # noqa: F811
    dbx_double: DatabricksDouble,  # noqa: F811
) -> None:
    d = dbx_deployer
    stable = d.deploy(_cfg("dbx-canary", "a"), timeout=TIMEOUT)
    url = stable.prediction_url
    svc = d.deploy(_cfg("dbx-canary", "b"), timeout=TIMEOUT, canary_percent=20)
    a_entity = _cfg("dbx-canary", "a").served_entity_name
    b_entity = _cfg("dbx-canary", "b").served_entity_name
    assert _routes(dbx_double, "dbx-canary") == {a_entity: 80, b_entity: 20}
    answers = [tuple(svc.predict(SAMPLE)) for _ in range(300)]
    share_b = answers.count(tuple(EXPECTED["b"])) / len(answers)
    assert 0.13 <= share_b <= 0.27, share_b
    assert answers.count(tuple(EXPECTED["a"])) + answers.count(tuple(EXPECTED["b"])) == 300
    metrics = svc.read_revision_metrics()
    assert metrics[_cfg("dbx-canary", "b").config_hash()].requests == answers.count(
        tuple(EXPECTED["b"])
    )

    described = json.loads(
        CliRunner().invoke(zmd, ["models", "describe", "dbx-canary", "-o", "json"]).output
    )
    assert described["canary"]["percent"] == 20

    result = CliRunner().invoke(zmd, ["models", "promote", "dbx-canary"])
    assert result.exit_code == 0, result.output
    # What docs/cli.md shows (its deployment is named fraud-model).
    shown = expected("docs/cli.md", "zmd models promote fraud-model")
    assert_same_shape(
        "zmd models promote", shown.replace("fraud-model", "dbx-canary"), result.output
    )
    assert _routes(dbx_double, "dbx-canary") == {b_entity: 100}
    promoted = d.find_deployment("dbx-canary")
    assert promoted.config.model_uri == uri("b") and promoted.prediction_url == url
    assert promoted.canary_candidate() is None

    d.deploy(_cfg("dbx-canary", "a"), timeout=TIMEOUT, canary_percent=50)
    assert _routes(dbx_double, "dbx-canary") == {b_entity: 50, a_entity: 50}
    result = CliRunner().invoke(zmd, ["models", "rollback", "dbx-canary"])
    assert result.exit_code == 0, result.output
    assert _routes(dbx_double, "dbx-canary") == {b_entity: 100}
    result = CliRunner().invoke(zmd, ["models", "rollback", "dbx-canary"])
    assert result.exit_code == 1 and "runs no canary" in result.output
    back = d.find_deployment("dbx-canary")
    assert back.predict(SAMPLE) == EXPECTED["b"]
    d.delete(back)


def test_stop_deletes_endpoint_keeps_record_start_recreates_same_url(
    dbx_deployer: Any,  # noqa: F811
    dbx_double: DatabricksDouble,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    d = dbx_deployer
    svc = d.deploy(_cfg("dbx-stop", "b", workload_size="Medium"), timeout=TIMEOUT)
    url = svc.prediction_url
    with caplog.at_level(logging.WARNING):
        d.stop(svc)
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "Databricks has no stop" in warning and "does not restore permissions" in warning
    assert dbx_double.endpoint("dbx-stop") is None
    stopped = d.find_deployment("dbx-stop")
    assert stopped is not None and stopped.status.state.value == "inactive"
    assert stopped.config.workload_size == "Medium"
    d.start(stopped, TIMEOUT)
    ep = dbx_double.endpoint("dbx-stop")
    assert ep is not None and ep["state"] == {"ready": "READY", "config_update": "NOT_UPDATING"}
    assert ep["config"]["served_entities"][0]["workload_size"] == "Medium"
    again = d.find_deployment("dbx-stop")
    assert again.prediction_url == url and again.status.state.value == "active"
    assert again.predict(SAMPLE) == EXPECTED["b"]
    d.delete(again)
    assert d.find_deployment("dbx-stop") is None


def test_databricks_errors_in_its_own_words(
    dbx_deployer: Any,  # noqa: F811
    dbx_double: DatabricksDouble,  # noqa: F811
) -> None:
    d = dbx_deployer
    with pytest.raises(DeploymentError, match="version 99 does not exist"):
        d.deploy(
            DatabricksDeploymentConfig(
                deployment_name="dbx-err", model_uri="models:/main.zmd.iris/99"
            ),
            timeout=TIMEOUT,
        )
    dbx_double.forbidden_models.add("main.zmd.iris")
    try:
        with pytest.raises(DeploymentError, match="does not have EXECUTE") as ei:
            d.deploy(_cfg("dbx-err", "a"), timeout=TIMEOUT)
        assert "PERMISSION_DENIED" in str(ei.value)
    finally:
        dbx_double.forbidden_models.discard("main.zmd.iris")
    with pytest.raises(DeploymentError, match="'GPU_LARGE' is not available in this workspace"):
        d.deploy(_cfg("dbx-err", "a", workload_type="GPU_LARGE"), timeout=TIMEOUT)
    with pytest.raises(ConfigurationError, match="workload_type 'TPU' is not one of"):
        d.build_config(model_uri=uri("a"), deployment_name="dbx-err", workload_type="TPU")
    assert dbx_double.endpoint("dbx-err") is None and d.find_deployment("dbx-err") is None

    # A name another endpoint holds: refused, never adopted or deleted.
    dbx_double.create_foreign_endpoint("dbx-taken")
    with pytest.raises(DeploymentExistsError, match="never takes over") as ei:
        d.deploy(_cfg("dbx-taken", "a"), timeout=TIMEOUT)
    assert "already exists" in str(ei.value)
    ep = dbx_double.endpoint("dbx-taken")
    assert ep is not None and ep["creator"] == "someone-else@example.com"
    assert d.find_deployment("dbx-taken") is None


def test_input_forms(dbx_deployer: Any) -> None:  # noqa: F811
    import numpy as np
    import pandas as pd

    svc = dbx_deployer.deploy(_cfg("dbx-forms", "b"), timeout=TIMEOUT)
    try:
        df = pd.DataFrame(SAMPLE, columns=["f0", "f1"])
        assert svc.request_body(df) == {
            "dataframe_split": {"columns": ["f0", "f1"], "data": SAMPLE}
        }
        assert svc.predict(df) == EXPECTED["b"]
        assert svc.predict(np.array(SAMPLE)) == EXPECTED["b"]
        assert svc.predict(df.to_dict(orient="records")) == EXPECTED["b"]
        assert svc.predict({"inputs": SAMPLE}) == EXPECTED["b"]
        assert svc.request_body({"messages": [{"role": "user", "content": "hi"}]}) == {
            "messages": [{"role": "user", "content": "hi"}]
        }
    finally:
        dbx_deployer.delete(svc)


def test_service_principal_and_no_credential_leaks(
    dbx_deployer: Any,  # noqa: F811
    dbx_double: DatabricksDouble,  # noqa: F811
    dbx_component: dict[str, Any],  # noqa: F811
) -> None:
    from zenml.client import Client

    from zenml_model_deployers.materializer import service_to_json

    creds = planted_credentials()
    sp = {"host": dbx_component["host"], "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET_REF}
    svc = dbx_deployer.deploy(_cfg("dbx-sp", "a", **sp), timeout=TIMEOUT)
    assert isinstance(svc, DatabricksDeploymentService)
    assert svc.predict(SAMPLE) == EXPECTED["a"]
    with pytest.raises(DeploymentError) as ei:
        dbx_deployer.deploy(_cfg("dbx-sp", "broken", **sp), timeout=TIMEOUT)
    assert "planted failure" in str(ei.value)
    pat_svc = dbx_deployer.deploy(_cfg("dbx-pat", "a"), timeout=TIMEOUT)
    haystacks = {
        "error": str(ei.value),
        "double's request log": dbx_double.request_log_text(),
    }
    for s in (svc, pat_svc):
        haystacks[f"store {s.deployment_name}"] = Client().get_service(s.uuid).model_dump_json()
        haystacks[f"artifact {s.deployment_name}"] = json.dumps(service_to_json(s))
        haystacks[f"metadata {s.deployment_name}"] = json.dumps(s.describe())
        haystacks[f"logs {s.deployment_name}"] = "\n".join(s.get_logs())
    for where, text in haystacks.items():
        for what, value in creds.items():
            assert value not in text, f"the {what} leaked into the {where}"
    dbx_deployer.delete(svc)
    dbx_deployer.delete(pat_svc)


def test_plain_credentials_are_refused() -> None:
    from pydantic import ValidationError

    from zenml_model_deployers.flavors.databricks.flavor import DatabricksDeployerConfig

    with pytest.raises(ValidationError) as ei:
        DatabricksDeployerConfig(host="https://x", token="dapi-plain-value")
    assert "secret reference" in str(ei.value) and "dapi-plain-value" not in str(ei.value)
    with pytest.raises(ValidationError, match="both `client_id` and `client_secret`"):
        DatabricksDeployerConfig(host="https://x", client_id="sp")
    # A reference is checked as given, not resolved: the component can be configured before
    # its secret exists (and configuring does not fetch it).
    later = DatabricksDeployerConfig(host="https://x", token="{{zmd-not-yet.token}}")
    assert later.model_dump()["token"] == "{{zmd-not-yet.token}}"


def test_timed_out_update_is_put_back_after_databricks_finishes_it(
    dbx_deployer: Any,  # noqa: F811
    dbx_double: DatabricksDouble,  # noqa: F811
) -> None:
    from zenml_model_deployers.errors import DeploymentTimeoutError

    d = dbx_deployer
    d.deploy(_cfg("dbx-slow", "a"), timeout=TIMEOUT)
    a_entity = _cfg("dbx-slow", "a").served_entity_name
    # Only the update's deploy is slow, whenever its request comes (a timer that reset the delay
    # after 0.5 s let a loaded machine's update come after it, fast: no timeout).
    dbx_double.slow_next_update = 2.5
    try:
        with pytest.raises(DeploymentTimeoutError) as ei:
            d.deploy(_cfg("dbx-slow", "b"), timeout=1.5)
    finally:
        dbx_double.slow_next_update = None
    # Databricks cannot cancel the running update: the rollback waited for it, then put the
    # previous entity back.
    assert "put back on the previous revision" in str(ei.value)
    assert _routes(dbx_double, "dbx-slow") == {a_entity: 100}
    svc = d.find_deployment("dbx-slow")
    assert svc.config.model_uri == uri("a") and svc.predict(SAMPLE) == EXPECTED["a"]
    d.delete(svc)


def test_tags_inference_table_env_and_logs(
    dbx_deployer: Any,  # noqa: F811
    dbx_double: DatabricksDouble,  # noqa: F811
) -> None:
    d = dbx_deployer
    table = {"catalog_name": "main", "schema_name": "ml", "table_name_prefix": "iris"}
    env = {"FEATURE_KEY": "{{secrets/ml/feature-key}}", "MODE": "fast"}
    # A Databricks secret the workspace does not hold: the entity fails, in Databricks' words.
    with pytest.raises(DeploymentError, match="Secret does not exist with scope: ml"):
        d.deploy(_cfg("dbx-gw", "a", env=env), timeout=TIMEOUT)
    assert dbx_double.endpoint("dbx-gw") is None
    dbx_double.put_secret("ml", "feature-key", "feature-value")
    svc = d.deploy(
        _cfg("dbx-gw", "a", tags={"team": "ml", "cost": "a"}, inference_table=table, env=env),
        timeout=TIMEOUT,
    )
    ep = dbx_double.endpoint("dbx-gw")
    assert ep["ai_gateway"]["inference_table_config"] == {**table, "enabled": True}
    entity = ep["config"]["served_entities"][0]
    # A Databricks secret reference travels as it is; the model gets the value.
    assert entity["environment_vars"] == env
    assert dbx_double.entity_env("dbx-gw", entity["name"]) == {
        "FEATURE_KEY": "feature-value",
        "MODE": "fast",
    }
    logs = list(svc.get_logs())
    assert any("created endpoint dbx-gw" in line for line in logs)
    assert any(f"[{svc.config.served_entity_name}] Model loaded" in line for line in logs)

    d.deploy(_cfg("dbx-gw", "b", tags={"team": "ml"}), timeout=TIMEOUT)
    ep = dbx_double.endpoint("dbx-gw")
    assert {t["key"]: t["value"] for t in ep["tags"]} == {"team": "ml", "zmd-deployment": "dbx-gw"}
    assert ep["ai_gateway"]["inference_table_config"] == {"enabled": False}
    d.delete(d.find_deployment("dbx-gw"))


def test_step_with_name_and_version_then_deploy_decision_false(
    dbx_deployer: Any,  # noqa: F811
    dbx_double: DatabricksDouble,  # noqa: F811
) -> None:
    from zenml import pipeline
    from zenml.client import Client
    from zenml_model_deployers.steps import databricks_deployer_step

    @pipeline(enable_cache=False)
    def dbx_step_pipeline(version: int, decide: bool) -> None:
        databricks_deployer_step(
            registered_model_name="main.zmd.iris",
            model_version=version,
            deployment_name="dbx-step",
            deploy_decision=decide,
            timeout=TIMEOUT,
        )

    run = dbx_step_pipeline(2, True)
    step = Client().get_pipeline_run(run.id).steps["databricks_deployer_step"]
    url = step.run_metadata["deployed_model_url"]
    assert url.endswith("/serving-endpoints/dbx-step/invocations")
    assert step.run_metadata["deployment"]["uc_version"] == "2"
    svc = step.outputs["databricks_deployment"][0].load()
    assert svc.predict(SAMPLE) == EXPECTED["b"]
    # A gate said no: version 1 is not deployed, version 2 keeps serving.
    run = dbx_step_pipeline(1, False)
    step = Client().get_pipeline_run(run.id).steps["databricks_deployer_step"]
    assert step.run_metadata["deployed_model_url"] == url
    assert dbx_deployer.find_deployment("dbx-step").config.model_uri == uri("b")
    dbx_deployer.delete(dbx_deployer.find_deployment("dbx-step"))


def test_progressive_rollout_promotes_through_the_routes(
    dbx_deployer: Any,  # noqa: F811
    dbx_double: DatabricksDouble,  # noqa: F811
) -> None:
    """The generic rollout on Databricks: routes per step, export_metrics for the gates (no
    latency there: the p95 gate is skipped), promotion at the end; a client never fails."""
    import threading
    import time

    d = dbx_deployer
    stable = d.deploy(_cfg("dbx-roll", "a"), timeout=TIMEOUT)
    failures: list[str] = []
    answers: list[Any] = []
    stop = threading.Event()

    def loop() -> None:
        deadline = time.monotonic() + 120
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                answers.append(tuple(stable.predict(SAMPLE)))
            except Exception as e:  # noqa: BLE001 - every failure counts
                failures.append(repr(e))

    t = threading.Thread(target=loop)
    t.start()
    try:
        svc = d.deploy(
            _cfg("dbx-roll", "b"),
            timeout=TIMEOUT,
            policy="canary",
            rollout={"steps": [30, 100], "interval": 1.0, "min_requests": 3},
        )
    finally:
        stop.set()
        t.join(30)
    record = svc.last_rollout
    assert record.verdict == "promoted" and [s.percent for s in record.steps] == [30, 100]
    gates = {g.gate: g for g in record.steps[0].gates}
    assert gates["min_requests"].passed and gates["max_error_rate"].passed
    assert gates["max_p95_ratio"].passed is None  # Databricks reports no latency
    assert failures == [] and tuple(EXPECTED["b"]) in answers
    b_entity = _cfg("dbx-roll", "b").served_entity_name
    assert _routes(dbx_double, "dbx-roll") == {b_entity: 100}
    d.delete(d.find_deployment("dbx-roll"))


def test_stdout_carries_only_the_result_when_the_sdk_warns(
    dbx_deployer: Any,  # noqa: F811
    dbx_double: DatabricksDouble,  # noqa: F811
) -> None:
    """The double has no host metadata (404), so databricks-sdk warns at every client it
    builds ("Failed to automatically resolve config from host metadata ..."), as it did for a
    user: the warning goes to stderr; `get-url` prints the URL alone and `-o json` parses."""
    from cli_output import assert_machine_readable, run_zmd

    svc = dbx_deployer.deploy(_cfg("dbx-stdout", "a"), timeout=TIMEOUT)
    try:
        assert_machine_readable("dbx-stdout", svc.prediction_url)
        # The warning was provoked, and shown where a user still sees it.
        done = run_zmd("models", "get-url", "dbx-stdout")
        assert "Failed to automatically resolve config from host metadata" in done.stderr
    finally:
        dbx_deployer.delete(dbx_deployer.find_deployment("dbx-stdout"))
