"""BentoML's home follows the ZenML config unless the user set BENTOML_HOME."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import numpy as np
from sklearn.dummy import DummyClassifier
from zenml_model_deployers.flavors.bentoml.packaging import save_model

x = np.array([[0.0, 1.0], [1.0, 0.0]])
print(save_model(DummyClassifier(strategy="constant", constant=0).fit(x, [0, 1]), "homeless"))
"""


def _save_a_model(tmp_path: Path, **extra: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "BENTOML_HOME"}
    env.update(HOME=str(tmp_path / "home"), ZENML_CONFIG_PATH=str(tmp_path / "zenml"), **extra)
    (tmp_path / "home").mkdir(exist_ok=True)
    (tmp_path / "save.py").write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, str(tmp_path / "save.py")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_bentoml_home_follows_the_zenml_config_unless_set(tmp_path: Path) -> None:
    tag = _save_a_model(tmp_path)
    name, version = tag.split(":")
    assert (tmp_path / "zenml" / "zmd" / "bentoml" / "models" / name / version).is_dir()
    assert not (tmp_path / "home" / "bentoml").exists()  # nothing written to ~/bentoml

    mine = tmp_path / "my-bentoml"
    tag = _save_a_model(tmp_path, BENTOML_HOME=str(mine))
    assert (mine / "models" / name / tag.split(":")[1]).is_dir()
