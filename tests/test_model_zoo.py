"""The model zoo through zmd-mlflow: the models users train, deployed by
`mlflow_deployer_step(model=..., input_example=...)` in ONE pipeline run and answered over HTTP
as docs/flavors/mlflow.md shows, equal to the model's own predictions (issue 25).

All models are small and fitted here in well under a second. They deploy one after another as
updates of ONE deployment (the README's `my-model`, which the README's pipeline creates): an
update starts one server, as a new deployment would, and leaves one relay and no server behind
per model; each is asked by a step before the next rolls out (tests/zoo_pipeline.py). The
transformers pipeline is one more model of the same run.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests
from zoo_models import (
    AVAILABLE,
    RANDOM_FOREST,
    ZOO,
    ZooModel,
    assert_matches,
    missing,
    random_forest,
    trained,
)
from zoo_pipeline import ASKERS, answers_of, mlflow_body, post, run_steps, run_zoo, step_id

from zenml_model_deployers.errors import ConfigurationError

ROOT = Path(__file__).resolve().parents[1]
NAME = "my-model"  # the README's deployment name: its pipeline creates it, the zoo updates it
FLAVOR = "zmd-mlflow"
# The forest is the README pipeline's model (its own test); the transformers pipeline is
# zmd-mlflow's alone.
KINDS = [k for k in AVAILABLE if k != "random-forest"]
KINDS += [] if missing("transformers") else ["transformers"]
ASKERS[FLAVOR] = lambda service, rows: post(service, mlflow_body(rows))
TIMINGS: dict[str, dict[str, float]] = {}


def assert_same_answers(url: str, zoo: ZooModel) -> None:
    r = requests.post(url, json=mlflow_body(zoo.rows), timeout=30)
    assert r.status_code == 200, r.text
    assert_matches(r.json()["predictions"], zoo)


@pytest.fixture(scope="module")
def zoo_deployment(mlflow_deployer: Any) -> Iterator[Any]:
    """The deployer; the shared deployment is deleted when the module ends."""
    yield mlflow_deployer
    svc = mlflow_deployer.find_deployment(NAME)
    if svc is not None:
        mlflow_deployer.delete(svc)
    if TIMINGS:
        print("\nzoo timings (s):", json.dumps(TIMINGS, indent=1))


@pytest.fixture(scope="module")
def zoo_run(zoo_deployment: Any) -> Iterator[Any]:
    """The zoo's pipeline run on the zmd-mlflow stack: every model an update of `my-model`."""
    from zenml_model_deployers.steps import mlflow_deployer_step

    from zenml_model_deployers.flavors import ensure_deployer_stack

    ensure_deployer_stack("zmd-test-mlflow", "zmd-test-mlflow", FLAVOR)
    deploy = mlflow_deployer_step.with_options(parameters={"deployment_name": NAME, "timeout": 180})
    yield from run_zoo({FLAVOR: deploy}, KINDS, {FLAVOR: zoo_deployment}, lambda f, k: NAME)


def deployed(run: Any, kind: str) -> dict[str, Any]:
    """The deployment as the run's deploy step of model `kind` left it (its `deployment` run
    metadata: the service artifact, loaded, is the deployment as it is now)."""
    return run_steps(run)[step_id(FLAVOR, "deploy", kind)].run_metadata["deployment"]  # type: ignore[no-any-return]


def readme_pipeline_with_a_random_forest() -> str:
    """The README's pipeline as a user adapts it: a RandomForestClassifier for the regression."""
    block = next(
        b
        for b in re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
        if "mlflow_deployer_step" in b
    )
    assert "LogisticRegression(max_iter=500)" in block
    return (
        block.replace(
            "from sklearn.linear_model import LogisticRegression",
            "from sklearn.ensemble import RandomForestClassifier",
        )
        .replace("LogisticRegression(max_iter=500)", RANDOM_FOREST)
        .replace("LogisticRegression", "RandomForestClassifier")
    )


def test_readme_pattern_with_a_random_forest(
    zoo_deployment: Any, mlflow_stack: str, tmp_path: Path
) -> None:
    """Issue 25: this failed with skops' "Untrusted types found in the file:
    ['sklearn.tree._tree.Tree']"."""
    (tmp_path / "run.py").write_text(readme_pipeline_with_a_random_forest())
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "run.py"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": ""},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    url = done.stdout.strip().splitlines()[-1]
    assert url.startswith("http://127.0.0.1:") and url.endswith("/invocations")
    # The README's request, and the zoo's rows, as the same forest predicts them in process.
    r = requests.post(url, json={"inputs": [[5.1, 3.5, 1.4, 0.2]]}, timeout=30)
    assert r.json() == {"predictions": [0]}
    assert_same_answers(url, random_forest())
    TIMINGS["random-forest (README pipeline, run)"] = {"run": time.perf_counter() - t0}


@pytest.mark.parametrize("kind", [k for k in ZOO if k != "random-forest"])
def test_zoo_model_deployed_by_the_step_answers_as_in_process(
    zoo_run: Any, zoo_deployment: Any, kind: str
) -> None:
    if reason := missing(kind):
        pytest.skip(reason)
    zoo = trained(kind)
    answer = answers_of(zoo_run, kind, FLAVOR)
    assert answer["status"] == 200, answer
    assert_matches(answer["body"]["predictions"], zoo)
    model_uri = deployed(zoo_run, kind)["model_uri"]
    if isinstance(zoo.example, pd.DataFrame):  # its columns are what the request names
        from mlflow.models import Model

        signature = Model.load(model_uri).signature
        assert signature is not None
        assert signature.inputs.input_names() == list(zoo.example.columns)
    # The same fitted model, trained again: the same model URI, so no new revision.
    first, again = (
        zoo_deployment.build_config(model=m, deployment_name=NAME, input_example=zoo.example)
        for m in (zoo.model, ZOO[kind]().model)
    )
    assert again.model_uri == first.model_uri
    # ... and the model the pipeline's step trained and deployed: the same model URI too.
    assert model_uri == first.model_uri, "an unchanged re-run would roll a new revision"


def test_every_model_was_an_update_of_the_readme_deployment(
    zoo_run: Any, zoo_deployment: Any
) -> None:
    svc = zoo_deployment.find_deployment(NAME)
    urls = {
        run_steps(zoo_run)[step_id(FLAVOR, "deploy", k)].run_metadata["deployed_model_url"]
        for k in KINDS
    }
    assert urls == {svc.prediction_url}
    revisions = [deployed(zoo_run, k)["revision"] for k in KINDS]
    assert revisions == list(range(revisions[0], revisions[0] + len(KINDS)))
    assert svc.config.model_uri == deployed(zoo_run, KINDS[-1])["model_uri"]


def test_a_transformers_pipeline_deployed_by_the_step_answers_as_in_process(
    zoo_run: Any, zoo_deployment: Any
) -> None:
    """A text-classification pipeline (tiny model and tokenizer built here) through
    `mlflow_deployer_step(model=...)`: saved with `mlflow.transformers`, asked with `inputs` (a
    list of texts), answering the pipeline's own labels and scores."""
    if reason := missing("transformers"):
        pytest.skip(reason)
    from mlflow.models import Model
    from zoo_models import text_pipeline

    zoo = trained("transformers")
    answer = answers_of(zoo_run, "transformers", FLAVOR)
    assert answer["status"] == 200, answer
    got = answer["body"]["predictions"]
    assert [g["label"] for g in got] == [w["label"] for w in zoo.expected]
    np.testing.assert_allclose(
        [g["score"] for g in got], [w["score"] for w in zoo.expected], rtol=0, atol=1e-6
    )
    model_uri = deployed(zoo_run, "transformers")["model_uri"]
    assert "transformers" in Model.load(model_uri).flavors
    # The same pipeline, built again: the same digest, so the same model URI (no rollout).
    first, again = (
        zoo_deployment.build_config(model=m, deployment_name=NAME, input_example=zoo.example)
        for m in (zoo.model, text_pipeline().model)
    )
    assert again.model_uri == first.model_uri


def test_a_transformers_pipeline_is_refused_by_zmd_bentoml(bentoml_deployer: Any) -> None:
    """zmd-bentoml's generated service takes arrays and records, not texts: a pipeline is
    refused before anything is stored, naming what is supported and the way out."""
    if reason := missing("transformers"):
        pytest.skip(reason)
    from zoo_models import text_pipeline

    with pytest.raises(ConfigurationError) as err:
        bentoml_deployer.build_config(model=text_pipeline().model, deployment_name="zoo-text")
    msg = str(err.value)
    assert "TextClassificationPipeline" in msg and "as a BentoML model" in msg
    assert "transformers" not in msg.split("supported model objects are")[1].split("What to do")[0]
    assert "bento_builder_step" in msg


# --- the packaging layer, without a server ---------------------------------------------------


class Scorer:
    """Has a `predict`, as a model does, but is of no library the layer knows."""

    def predict(self, x: Any) -> Any:
        return x


def test_an_unsupported_model_names_what_is_supported_and_model_uri(mlflow_deployer: Any) -> None:
    with pytest.raises(ConfigurationError) as err:
        mlflow_deployer.build_config(model=Scorer(), deployment_name="zoo-unsupported")
    msg = str(err.value)
    assert "test_model_zoo.Scorer" in msg
    for supported in ("scikit-learn", "XGBoost", "LightGBM", "PyTorch", "PythonModel"):
        assert supported in msg
    assert "model_uri=" in msg


_PROBE = """
import json, sys
sys.path.insert(0, {tests!r})
from pathlib import Path
from zoo_models import AVAILABLE, ZOO
from zenml_model_deployers.packaging import MLflowModelTarget, detect_library, model_digest, package_model

sklearn_kinds = [k for k in ZOO if k not in ("xgboost", "lightgbm", "pytorch")]
digests = {{}}
for i, kind in enumerate(sklearn_kinds):
    z = ZOO[kind]()
    package_model(z.model, MLflowModelTarget(), Path({out!r}) / kind, z.example)
    digests[kind] = model_digest(z.model, detect_library(z.model), z.example)
heavy = sorted(m for m in ("torch", "xgboost", "lightgbm") if m in sys.modules)
for kind in [k for k in ("xgboost", "lightgbm", "pytorch") if k in AVAILABLE]:
    z = ZOO[kind]()
    digests[kind] = model_digest(z.model, detect_library(z.model), z.example)
print(json.dumps({{"heavy": heavy, "digests": digests}}))
"""


def test_digests_are_stable_across_processes_and_no_other_library_is_imported(
    tmp_path: Path,
) -> None:
    """A re-run is another process (another hash seed): each zoo model must digest the same,
    or an unchanged pipeline would roll out a new revision. Packaging scikit-learn models
    must not import torch, XGBoost or LightGBM."""
    from zenml_model_deployers.packaging import detect_library, model_digest

    probe = _PROBE.format(tests=str(Path(__file__).parent), out=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, "PYTHONHASHSEED": "12345"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["heavy"] == []
    here = {}
    for kind in AVAILABLE:
        z = trained(kind)
        here[kind] = model_digest(z.model, detect_library(z.model), z.example)
        # As a pipeline's next step gets it: loaded back from the artifact store. A freshly
        # fitted model shares strings and dtypes its loaded copy does not; a plain pickle's
        # digest differed for the forest, the boosting and the column pipeline.
        loaded = pickle.loads(pickle.dumps(z.model))
        assert model_digest(loaded, detect_library(loaded), z.example) == here[kind], kind
    assert seen["digests"] == here
    assert all(here.values()) and len(set(here.values())) == len(here)


def test_a_changed_model_gets_another_digest() -> None:
    from zenml_model_deployers.packaging import detect_library, model_digest

    for kind in [k for k in ("random-forest", "pytorch") if not missing(k)]:
        z = ZOO[kind]()
        library = detect_library(z.model)
        assert library is not None
        before = model_digest(z.model, library)
        if kind == "pytorch":
            import torch

            with torch.no_grad():
                next(z.model.parameters())[0, 0] += 1e-3
        else:
            z.model.set_params(n_estimators=21).fit(z.rows, z.expected)
        assert model_digest(z.model, library) != before, kind


def test_a_fitted_model_and_its_loaded_copy_dump_the_same_joblib(tmp_path: Path) -> None:
    """zmd-seldon / zmd-kserve name an upload after its files: a model deployed in-process and
    the same model from the artifact store (loaded back) must upload to the same place."""
    import cloudpickle

    from zenml_model_deployers.packaging.native import SklearnJoblibTarget

    for kind in ("random-forest", "hist-gradient-boosting", "column-pipeline"):
        z = trained(kind)
        fresh, loaded = tmp_path / f"{kind}-fresh", tmp_path / f"{kind}-loaded"
        SklearnJoblibTarget().save(z.model, fresh)
        SklearnJoblibTarget().save(cloudpickle.loads(cloudpickle.dumps(z.model)), loaded)
        assert fresh.read_bytes() == loaded.read_bytes(), kind
