"""`python examples/databricks/run.py --offline` as a user runs it: own process, own throw-away
ZenML config, double and stand-in registry; a model object registered through MLflow, deployed,
a second version as a 25% canary, promoted, stopped and started on the same URL, deleted."""

from __future__ import annotations

import re

from example_support import run_offline_example


def test_the_offline_example_runs_end_to_end() -> None:
    out = run_offline_example("databricks")
    url = re.search(r"deployed_model_url: (\S+)", out)
    assert url and url.group(1).endswith("/serving-endpoints/iris-dbx/invocations")
    assert "predict(3 rows) -> [0, 1, 2]" in out
    assert "canary: models:/main.default.iris/2 at 25%" in out
    share = re.search(r"200 requests: (\d+)% answered by the canary", out)
    assert share and 12 <= int(share.group(1)) <= 38
    assert f"started again on {url.group(1)}: [0, 1, 1]" in out
    assert "deleted;" in out
