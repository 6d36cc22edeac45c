"""A pipeline's step gets a deep copy of what the pipeline was given: ZenML's compiler deep-copies
the pipeline, an `ExternalArtifact`'s value included, before uploading it. The copy must digest
as the original, or an unchanged re-run from a pipeline rolls a new revision of a model deployed
from the test process (or a notebook) before (issue 25): a LightGBM booster's copy is rebuilt
from its model string with other Python attributes, and a copy of a frame's slice (an input
example, `df[:10]`) loses its arrays' read-only flags and can keep its columns in other blocks."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pandas as pd
import pytest

from zenml_model_deployers.packaging import detect_library, model_digest
from zenml_model_deployers.packaging.digest import value_pickle_bytes


def _frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "age": rng.uniform(18, 80, size=40),
            "city": rng.choice(["paris", "berlin", "rome"], size=40).astype(object),
            "plan": pd.Categorical(rng.choice(["free", "pro"], size=40)),
            "visits": pd.array(rng.integers(0, 9, size=40), dtype="Int64"),
        }
    )
    df.loc[3, "city"] = None
    df.loc[5, "visits"] = pd.NA
    return df


def test_a_copied_lightgbm_model_and_example_digest_as_the_originals() -> None:
    lightgbm = pytest.importorskip("lightgbm")
    x = _frame()[["age"]].assign(f=np.arange(40.0))
    y = 2.0 * x["age"] - x["f"]
    model = lightgbm.LGBMRegressor(n_estimators=5, random_state=0, verbose=-1).fit(x, y)
    example = _frame()[:10]
    library = detect_library(model)
    assert library is not None
    original = model_digest(model, library, example)
    assert original is not None
    copied_model, copied_example = copy.deepcopy(model), copy.deepcopy(example)
    assert pickle.dumps(copied_model._Booster) != pickle.dumps(model._Booster), "rebuilt"
    assert model_digest(copied_model, library, copied_example) == original
    # ... and what the copy did not keep is still told apart: another fit, another example.
    other = lightgbm.LGBMRegressor(n_estimators=6, random_state=0, verbose=-1).fit(x, y)
    assert model_digest(other, library, example) != original
    assert model_digest(model, library, _frame()[1:11]) != original


def test_a_frame_is_written_by_value_and_loads_back_equal() -> None:
    df = _frame()
    sliced = df[:10]
    assert value_pickle_bytes(sliced, fast=True) == value_pickle_bytes(sliced.copy(), fast=True)
    reordered = pd.concat([df[["plan", "visits"]], df[["age", "city"]]], axis=1)[df.columns]
    assert value_pickle_bytes(reordered, fast=True) == value_pickle_bytes(df, fast=True)
    # A frame inside a model loads back as it was (the joblib upload round-trips the model).
    odd = df.set_axis(["a", "a", "b", "c"], axis=1).set_axis(np.arange(40) * 2)
    for frame in (df, sliced, odd, pd.DataFrame(index=range(3))):
        back = pickle.loads(value_pickle_bytes(frame, fast=False))
        pd.testing.assert_frame_equal(back, frame, check_exact=True)
    changed = df.copy()
    changed.loc[0, "city"] = "madrid"
    assert value_pickle_bytes(changed, fast=True) != value_pickle_bytes(df, fast=True)


def test_bento_builder_saves_a_copied_model_to_the_same_version() -> None:
    """`bento_builder_step(model=...)` names the BentoML model version after the model: the
    copy a step gets must save to the version the original did (no new bento on a re-run)."""
    lightgbm = pytest.importorskip("lightgbm")
    pytest.importorskip("bentoml")
    from zenml_model_deployers.flavors.bentoml.packaging import save_model

    x = _frame()[["age"]].assign(f=np.arange(40.0))
    model = lightgbm.LGBMRegressor(n_estimators=5, random_state=0, verbose=-1).fit(x, x["f"])
    tag = save_model(model, "zmdtest_copied", model_type="sklearn")
    assert save_model(copy.deepcopy(model), "zmdtest_copied", model_type="sklearn") == tag
