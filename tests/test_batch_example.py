"""examples/batch_inference/ as a user runs it: a nightly scoring pipeline on a Parquet dataset
in the artifact store, run twice (the second run resumes: nothing to redo), then local=True."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "batch_inference"


def test_nightly_scoring_example(
    mlflow_deployer: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    from zenml.client import Client

    monkeypatch.chdir(tmp_path)
    # The example activates its own stack only while it runs, and puts back the one that was
    # active (a user's, here the session's: ZenML's own CLI tests run on it).
    before = Client().active_stack_model.id
    sys.path.insert(0, str(EXAMPLE))
    try:
        import run as example
    finally:
        sys.path.remove(str(EXAMPLE))
    try:
        example.main(delete=True)
        assert Client().active_stack_model.id == before, "the example left its stack active"
    finally:
        left = mlflow_deployer.find_deployment("nightly-scorer")
        if left is not None:
            mlflow_deployer.delete(left)
        sys.modules.pop("run", None)
        sys.modules.pop("pipelines", None)
        # The example's stack has the artifact store of the stack it was made from: this one.
        store = Client().active_stack.artifact_store.path
        Client().activate_stack(before)
    out = capsys.readouterr().out
    assert "run 1: 20000 rows predicted, 0 skipped" in out
    assert "run 2: 0 rows predicted, 20000 skipped" in out
    assert "table fraud_scores: 20000 rows" in out
    assert "local=True gives the same predictions: True" in out

    # The predictions are Parquet part files in the artifact store, one per 5000-row chunk,
    # in input order, with the model's columns plus `prediction`.
    folder = Path(out.split("-> ")[1].splitlines()[0])
    assert folder.is_relative_to(store)  # the default output: the artifact store
    assert sorted(p.name for p in folder.glob("part-*")) == [
        f"part-{i:06d}.parquet" for i in range(4)
    ]
    parts = pd.read_parquet(folder)
    assert list(parts.columns) == ["amount", "age_days", "country_risk", "prediction"]
    data = pd.read_parquet(Path(store) / "datasets" / "transactions")
    assert parts["amount"].tolist() == data["amount"].tolist()
    assert 0 < parts["prediction"].sum() < len(parts)
