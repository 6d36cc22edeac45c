"""docs/custom.md shows the example's code, not a copy that drifts: every code block marked
`<!-- file: PATH -->` is that file, whole; every block marked `<!-- excerpt: PATH -->` is a
verbatim part of it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "custom.md"
BLOCK = re.compile(r"<!-- (file|excerpt): (\S+) -->\n```python\n(.*?)```\n", re.S)


def test_the_guide_shows_the_example_files_as_they_are() -> None:
    blocks = BLOCK.findall(GUIDE.read_text())
    kinds = {(kind, path) for kind, path, _ in blocks}
    assert ("file", "examples/custom_flavor/litserve_flavor.py") in kinds
    assert ("excerpt", "tests/test_custom_flavor_example.py") in kinds
    assert ("excerpt", "examples/custom_flavor/run.py") in kinds
    for kind, path, code in blocks:
        source = (ROOT / path).read_text()
        if kind == "file":
            assert code == source, f"docs/custom.md's copy of {path} differs from the file"
        else:
            assert code.strip() and code.strip() in source, (
                f"docs/custom.md quotes {path} with code that is not in the file"
            )


def _bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```\n", GUIDE.read_text(), re.S)


def test_the_guides_install_names_what_the_package_offers() -> None:
    """The install from a checkout or its wheel names the `testing` extra, which installs
    pytest (the conformance suite's), as the guide says; the index line is kept for later.
    (tests/test_wheel_install.py checks the built wheel offers the same extra.)"""
    import tomllib

    install = next(b for b in _bash_blocks() if "pip install" in b)
    lines = [ln for ln in install.splitlines() if ln.startswith("pip install")]
    assert any('"./zenml-model-deployers[testing]"' in ln for ln in lines), lines
    assert any("dist/zenml_model_deployers-*.whl)[testing]" in ln for ln in lines), lines
    assert all("litserve scikit-learn" in ln for ln in lines), lines
    assert 'pip install "zenml-model-deployers[testing]" litserve scikit-learn' in (
        GUIDE.read_text()
    )
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert [d for d in extras["testing"] if d.startswith("pytest")], extras["testing"]


WINE = """
import sys
from zenml_model_deployers.flavors import get_deployer
from zenml_model_deployers.flavors.mlflow.config import MLflowDeploymentConfig

config = MLflowDeploymentConfig(deployment_name="wine-rf", model_uri=sys.argv[1])
print(get_deployer("zmd-mlflow").deploy(config, timeout=120).prediction_url)
"""

ACTIVE = """
from zenml_model_deployers.errors import DeploymentError
from zenml_model_deployers.flavors import get_deployer

try:
    get_deployer()
except DeploymentError as e:
    msg = str(e).replace("\\n", "\\n  ")
    print(f"Error: {msg}")
"""


def test_the_guides_commands_then_zmd_on_another_flavor_from_elsewhere(
    fresh_configs: Any, models_dir: Path
) -> None:
    """The guide's register commands, as written, on a fresh config: they leave the active
    stack on `litserve-stack`, whose flavor imports only from the example's folder. From any
    other folder, `zmd` manages a zmd-mlflow deployment as usual (it printed a 249-line
    traceback ending in CustomFlavorImportError), and where the active stack itself is asked
    for, the error is the guide's: one message, with what to do, no traceback."""
    env, work = fresh_configs.new("guide")
    (work / "wine.py").write_text(WINE)
    deployed = _sh(f"python wine.py {models_dir / 'a'}", env, work)
    url = deployed.stdout.strip().splitlines()[-1]
    try:
        register = next(b for b in _bash_blocks() if "flavor register" in b)
        _sh(register, env, ROOT)  # its `cd examples/custom_flavor` is from the checkout
        active = _sh("zenml stack describe", env, work)
        assert "litserve-stack" in active.stdout + active.stderr

        got = _sh("zmd models get-url wine-rf", env, work)
        assert got.stdout == url + "\n"
        stopped = _sh("zmd models stop wine-rf", env, work)
        assert stopped.stdout == "Deployment 'wine-rf' stopped.\n", stopped
        assert "Traceback" not in stopped.stderr

        (work / "active.py").write_text(ACTIVE)
        shown = re.search(r"```\n(Error: The active stack .*?)```\n", GUIDE.read_text(), re.S)
        assert shown, "docs/custom.md shows the error"
        assert _sh("python active.py", env, work).stdout == shown[1]
    finally:
        _sh("zmd models delete wine-rf -y", env, work)


def _sh(command: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["bash", "-c", command], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, (
        f"`{command}` exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    )
    return done
