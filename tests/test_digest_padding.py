"""A fitted tree's node array is a padded structured array (57 bytes of fields in 64): the
padding holds whatever the allocator left there, so the same tree fitted twice, or in another
process (a pipeline step), can pickle to different bytes. Digests and uploads must not see it."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path
from typing import Any

import numpy as np


def _with_garbage_in_padding(model: Any) -> Any:
    """A copy of a fitted GradientBoostingRegressor whose trees' node padding is 0xAB."""
    other = copy.deepcopy(model)
    for est in other.estimators_.ravel():
        tree = est.tree_
        state = tree.__getstate__()
        nodes = state["nodes"]
        dirty = np.frombuffer(bytearray(nodes.tobytes()), dtype=np.uint8).reshape(len(nodes), -1)
        used = np.zeros(nodes.dtype.itemsize, dtype=bool)
        for name in nodes.dtype.names:
            dtype, offset = nodes.dtype.fields[name][:2]
            used[offset : offset + dtype.itemsize] = True
        assert not used.all(), "the node array has no padding in this scikit-learn"
        dirty[:, ~used] = 0xAB
        state["nodes"] = dirty.view(nodes.dtype).reshape(nodes.shape)
        tree.__setstate__(state)
    return other


def test_the_same_trees_with_other_padding_digest_and_upload_alike(tmp_path: Path) -> None:
    from sklearn.datasets import make_regression
    from sklearn.ensemble import GradientBoostingRegressor

    from zenml_model_deployers.packaging import detect_library, model_digest
    from zenml_model_deployers.packaging.native import SklearnJoblibTarget

    x, y = make_regression(100, 4, random_state=0)
    model = GradientBoostingRegressor(n_estimators=5, random_state=0).fit(x, y)
    dirty = _with_garbage_in_padding(model)
    assert pickle.dumps(dirty) != pickle.dumps(model), "the padding differs"
    assert np.array_equal(dirty.predict(x), model.predict(x))
    library = detect_library(model)
    assert library is not None
    assert model_digest(dirty, library) == model_digest(model, library)
    SklearnJoblibTarget().save(model, tmp_path / "a")
    SklearnJoblibTarget().save(dirty, tmp_path / "b")
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()
    # Only the padding was cleaned: the saved model predicts as the fitted one.
    import joblib

    assert np.array_equal(joblib.load(tmp_path / "b").predict(x), model.predict(x))
