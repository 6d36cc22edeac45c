"""The zoo through flavors' deploy steps in ONE ZenML pipeline run: each model is deployed with
each flavor's step `model=` as an update of that flavor's one deployment, and asked over HTTP in
the request format the flavor's docs show (by a step) before the next model replaces it.

Asking inside the run is what lets one deployment per flavor (one server start or model load per
model, as an update costs) serve the whole zoo: once the next model rolls out, the previous one
is gone.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import numpy as np
import pandas as pd
import requests
from zenml import pipeline, step
from zoo_models import trained

from zenml_model_deployers.service import DeploymentService

#: flavor -> (service, rows) -> what the service answered (JSON-able, `post` gives the HTTP
#: part); set by each test module (a request may carry a credential, which must never be a
#: step parameter: parameters are stored with the run).
ASKERS: dict[str, Callable[[DeploymentService, Any], dict[str, Any]]] = {}


def post(
    service: DeploymentService, body: dict[str, Any], headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """POSTs `body` to the deployment's URL: `{"status": ..., "body": ...}`."""
    r = requests.post(service.prediction_url, json=body, headers=headers or {}, timeout=60)
    try:
        answer: Any = r.json()
    except ValueError:
        answer = r.text
    return {"status": r.status_code, "body": answer}


def records_body(rows: Any) -> dict[str, Any]:
    """zmd-bentoml's generated service: `input_data` as records for a DataFrame, else one
    list per row; a missing value is JSON's null."""
    if isinstance(rows, pd.DataFrame):
        data = rows.astype(object).where(rows.notna(), None)
        return {"input_data": data.to_dict(orient="records")}
    arr = np.asarray(rows, dtype=object)
    return {"input_data": np.where(pd.isna(arr), None, arr).tolist()}


def mlflow_body(rows: Any) -> dict[str, Any]:
    """MLflow's scoring format (zmd-mlflow, Databricks): `dataframe_split` for a DataFrame,
    `inputs` for an array; a missing value is JSON's null."""
    if isinstance(rows, pd.DataFrame):
        data = rows.astype(object).where(rows.notna(), None).to_numpy().tolist()
        return {"dataframe_split": {"columns": list(rows.columns), "data": data}}
    arr = np.asarray(rows, dtype=object)
    return {"inputs": np.where(pd.isna(arr), None, arr).tolist()}


@step(enable_cache=False)
def ask_over_http(service: DeploymentService, kind: str, flavor: str) -> Annotated[str, "answer"]:
    """Asks the deployment about the zoo's rows as the flavor's docs show (`ASKERS`); returns
    the answer as JSON text."""
    return json.dumps(ASKERS[flavor](service, trained(kind).rows))


def example_of(zoo: Any) -> Any:
    """The input example the run gives model `zoo`: its own, or (the README's forest has none)
    a few of its rows: the flavors' requests name the columns or dtype the example gives."""
    return zoo.example if zoo.example is not None else zoo.rows[:5]


def step_id(flavor: str, what: str, kind: str) -> str:
    """The id of the run's `what` ("deploy" or "ask") step for model `kind` on `flavor`."""
    return f"{flavor.removeprefix('zmd-')}_{what}_{kind}"


def zoo_pipeline(
    deploys: dict[str, Callable[..., Any]],
    kinds: list[str],
    own_deployments: Callable[[str, str], str] | None = None,
) -> Any:
    """A pipeline that deploys `kinds` in turn with each flavor's `deploy(model=,
    input_example=)` (a deploy step with its other parameters bound): as updates of one
    deployment per flavor, asking each before the next model rolls out; or, with
    `own_deployments` ((flavor, kind) -> deployment name), each model in its own deployment,
    left serving for the tests to ask after the run (no ask steps: where many deployments cost
    little, as models loaded into one MLServer, a step per question costs more).

    The models, fitted here, enter the run as artifacts (ZenML's `ExternalArtifact`, uploaded
    once and given to every flavor's step): a training step per model would add its own step
    run, seconds each on a loaded machine, and test nothing of ours. A model without an input
    example (the README's forest) gets a few of its rows: the flavors' requests name the
    columns or dtype the example gives.
    """
    from zenml import ExternalArtifact

    zoos = {kind: trained(kind) for kind in kinds}
    name = "-".join(f.removeprefix("zmd-") for f in deploys)

    @pipeline(enable_cache=False, name=f"zoo-{name}")
    def zoo() -> None:
        after: list[str] = []
        for kind, z in zoos.items():
            model, example = ExternalArtifact(value=z.model), ExternalArtifact(value=example_of(z))
            services = {}
            for flavor, deploy in deploys.items():
                own = {"deployment_name": own_deployments(flavor, kind)} if own_deployments else {}
                services[flavor] = deploy(
                    model=model,
                    input_example=example,
                    id=step_id(flavor, "deploy", kind),
                    after=after,
                    **own,
                )
            if own_deployments:
                continue
            after = []
            for flavor, service in services.items():
                # After every flavor's deploy: the asks see the deployments all updated.
                ask_over_http(
                    service,
                    kind,
                    flavor,
                    id=step_id(flavor, "ask", kind),
                    after=[step_id(f, "deploy", kind) for f in deploys],
                )
                after.append(step_id(flavor, "ask", kind))

    return zoo


def run_zoo(
    deploys: dict[str, Callable[..., Any]],
    kinds: list[str],
    deployers: dict[str, Any],
    name_of: Callable[[str, str], str],
    own_deployments: bool = False,
) -> Iterator[Any]:
    """Runs `zoo_pipeline(deploys, kinds)` once, prints each deploy step's seconds and the
    run's, and yields the run (for a module fixture: `yield from run_zoo(...)`). The
    deployments (`name_of(flavor, kind)`, by `deployers[flavor]`) are deleted afterwards, also
    when the run failed; several at once (each waits until its model no longer answers)."""
    from concurrent.futures import ThreadPoolExecutor

    from zenml.client import Client

    t0 = time.perf_counter()
    try:
        own = name_of if own_deployments else None
        run = zoo_pipeline(deploys, kinds, own).with_options(run_name=f"zoo-{'-'.join(deploys)}")()
        run = Client().get_pipeline_run(run.id)
        timings: dict[str, float] = {
            step_id(f, "deploy", k): round(step_seconds(run, step_id(f, "deploy", k)), 2)
            for k in kinds
            for f in deploys
        }
        timings["all steps"] = round(sum(step_seconds(run, s) for s in run_steps(run)), 1)
        timings["run"] = round(time.perf_counter() - t0, 1)
        print("\nzoo timings (s):", json.dumps(timings))
        yield run
    finally:
        t1 = time.perf_counter()
        names = {(f, name_of(f, k)) for f in deploys for k in kinds}
        found = [(f, deployers[f].find_deployment(n)) for f, n in sorted(names)]
        found = [(f, svc) for f, svc in found if svc is not None]
        with ThreadPoolExecutor(max_workers=4) as pool:
            done = [pool.submit(deployers[f].delete, svc) for f, svc in found]
        for d in done:
            d.result()
        print(f"\nzoo deletes: {len(found)} in {time.perf_counter() - t1:.1f} s")


_STEPS: dict[Any, dict[str, Any]] = {}


def run_steps(run: Any) -> dict[str, Any]:
    """The run's steps by name, listed from the store once: `run.steps` lists them all again
    at every access (16 steps, a second or more under load)."""
    if run.id not in _STEPS:
        _STEPS[run.id] = run.steps
    return _STEPS[run.id]


def answers_of(run: Any, kind: str, flavor: str) -> dict[str, Any]:
    """What the deployment of `flavor` answered about model `kind` in `run` (`ASKERS`)."""
    answer = run_steps(run)[step_id(flavor, "ask", kind)].outputs["answer"][0].load()
    return json.loads(answer)  # type: ignore[no-any-return]


def step_seconds(run: Any, name: str) -> float:
    """How long a step of the run took."""
    s = run_steps(run)[name]
    return float((s.end_time - s.start_time).total_seconds())
