"""Errors a user can act on: the backend's words first, a log that exists, bounded context."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
from zenml import pipeline
from zenml.client import Client
from zenml_model_deployers.steps import mlflow_deployer_step

from zenml_model_deployers.errors import DeploymentError
from zenml_model_deployers.flavors.mlflow.config import MLflowDeploymentConfig
from zenml_model_deployers.local.process import failure_cause, keep_failed_log
from zenml_model_deployers.local.service import zmd_home

# The shape of what `mlflow models serve` logs for a model that is not there (trimmed).
MLFLOW_MISSING = """\
Traceback (most recent call last):
  File "/venv/lib/python3.11/site-packages/mlflow/store/artifact/artifact_repo.py", line 455
    raise MlflowException(
mlflow.exceptions.MlflowException: The following failures occurred while downloading one or more artifacts from /tmp/x:
##### File nope #####
No such artifact: 'nope'
"""
# A model that fails in the uvicorn child; the parent then reports only the child's exit.
CHILD_THEN_WRAPPER = """\
Traceback (most recent call last):
  File "/venv/lib/python3.11/site-packages/mlflow/pyfunc/__init__.py", line 1, in load
RuntimeError: model weights are corrupt (planted failure)
INFO:     Waiting for application startup.
Traceback (most recent call last):
  File "/venv/lib/python3.11/site-packages/mlflow/pyfunc/backend.py", line 326, in serve
Exception: Command '['bash', '-c', 'exec uvicorn']' returned non zero return code. Return code = 1
"""


def test_the_cause_is_the_backends_own_line(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text(MLFLOW_MISSING)
    assert failure_cause(log) == "MlflowException: No such artifact: 'nope'"
    log.write_text(CHILD_THEN_WRAPPER)
    assert failure_cause(log) == "RuntimeError: model weights are corrupt (planted failure)"
    log.write_text("starting\nlistening on 127.0.0.1:5000\n")
    assert failure_cause(log) == ""


def test_failed_logs_are_kept_and_bounded(tmp_path: Path) -> None:
    for i in range(8):
        log = tmp_path / f"server-{i}.log"
        log.write_text(f"run {i}\n")
        os.utime(log, (time.time() + i, time.time() + i))
        kept = keep_failed_log(log, keep=5)
        assert kept == tmp_path / "failed" / f"server-{i}.log" and kept.exists()
    left = sorted(p.name for p in (tmp_path / "failed").iterdir())
    assert left == [f"server-{i}.log" for i in range(3, 8)]


def _cited_log(message: str) -> Path:
    m = re.search(r"full log: (\S+\.log)", message)
    assert m, message
    return Path(m.group(1))


def test_a_failed_first_deploy_names_a_log_that_exists(
    mlflow_deployer: Any, tmp_path: Path
) -> None:
    cfg = MLflowDeploymentConfig(deployment_name="first-fails", model_uri=str(tmp_path / "nope"))
    with pytest.raises(DeploymentError) as err:
        mlflow_deployer.deploy(cfg, timeout=120)
    msg = str(err.value)
    # Cause first, in MLflow's words; a few lines of context, not the whole traceback.
    assert msg.splitlines()[0] == "MlflowException: No such artifact: 'nope'"
    assert len(msg.splitlines()) <= 20
    log = _cited_log(msg)
    assert log.exists() and "No such artifact: 'nope'" in log.read_text()
    assert "Traceback" in log.read_text()  # the full traceback stays in the log
    # Nothing else of the failed deployment is left: no row, no process, only failed logs.
    assert mlflow_deployer.find_deployment("first-fails") is None
    workdir = zmd_home() / "local" / "zmd-mlflow" / "first-fails"
    assert [p.name for p in workdir.iterdir()] == ["failed"]


def test_the_step_exception_zenml_records_carries_the_backends_words(
    mlflow_stack: str, tmp_path: Path
) -> None:
    @pipeline(enable_cache=False)
    def deploy_missing_model() -> None:
        mlflow_deployer_step(model_uri=str(tmp_path / "gone"), deployment_name="step-fails")

    with pytest.raises(RuntimeError):  # ZenML's "Pipeline run has failed ..."
        deploy_missing_model.with_options(run_name="step-fails-run")()
    step = Client().get_pipeline_run("step-fails-run").steps["mlflow_deployer_step"]
    info = step.exception_info
    assert info is not None and info.message is not None
    assert info.message.startswith("MlflowException: No such artifact: 'gone'")
    assert _cited_log(info.message).exists()
