"""`python examples/databricks/run.py --offline` as a user runs it: own process, own throw-away
ZenML config, double and stand-in registry; a model object registered through MLflow, deployed,
a second version as a 25% canary, promoted, stopped and started on the same URL, deleted."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path


def test_the_offline_example_runs_end_to_end() -> None:
    script = Path(__file__).resolve().parents[1] / "examples" / "databricks" / "run.py"
    done = subprocess.run(
        [sys.executable, str(script), "--offline"], capture_output=True, text=True, timeout=400
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    out = done.stdout
    url = re.search(r"deployed_model_url: (\S+)", out)
    assert url and url.group(1).endswith("/serving-endpoints/iris-dbx/invocations")
    assert "predict(3 rows) -> [0, 1, 2]" in out
    assert "canary: models:/main.default.iris/2 at 25%" in out
    share = re.search(r"200 requests: (\d+)% answered by the canary", out)
    assert share and 12 <= int(share.group(1)) <= 38
    assert f"started again on {url.group(1)}: [0, 1, 1]" in out
    assert "deleted;" in out
