"""The commands the README and the docs show, run as shown on a fresh ZenML config.

Each setup block (the bash blocks that register a model deployer) runs in its own fresh
config; the README's "Use it in your pipeline" runs end to end: setup, the pipeline, the curl,
whose answer must be the one the README prints.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SETUP_DOCS = [
    "README.md",
    "docs/quickstart.md",
    "docs/flavors/mlflow.md",
    "docs/flavors/bentoml.md",
    "docs/flavors/huggingface.md",
]


def bash_blocks(doc: str) -> list[str]:
    """The ```bash blocks of a Markdown file, in order."""
    return re.findall(r"```bash\n(.*?)```", (ROOT / doc).read_text(), flags=re.DOTALL)


def python_blocks(doc: str) -> list[str]:
    """The ```python blocks of a Markdown file, in order."""
    return re.findall(r"```python\n(.*?)```", (ROOT / doc).read_text(), flags=re.DOTALL)


def printed_answer(block: str) -> object:
    """The JSON answer a block shows in its last `# {...}` comment line."""
    line = [ln for ln in block.splitlines() if ln.startswith("# {")][-1]
    return json.loads(line[2:])


def run_block(block: str, env: dict[str, str], cwd: Path) -> str:
    """Runs a doc block with bash, as a user pastes it (`pip install` lines skipped: the
    package is installed), failing on the first command that fails."""
    lines = [ln for ln in block.splitlines() if not ln.lstrip().startswith("pip install")]
    done = subprocess.run(
        ["bash", "-e", "-c", "\n".join(lines)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"{block}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def fresh_template(zenml_env: Path) -> Path:
    """A ZenML config as a first `zenml` command leaves it (store created, `default` stack
    active, nothing else), made once: creating a store costs most of a command's time."""
    home = zenml_env / "fresh-template"
    (home / "work").mkdir(parents=True)
    env = {**os.environ, "ZENML_CONFIG_PATH": str(home / "zenml")}
    run_block("zenml stack list > /dev/null", env, home / "work")
    return home / "zenml"


def fresh_config(template: Path) -> tuple[dict[str, str], Path]:
    """A copy of the fresh template: a new, untouched ZenML config and working directory
    (under the test session's directory, so that servers started there end with it)."""
    home = template.parent.parent / f"fresh-{uuid.uuid4().hex[:8]}"
    work = home / "work"
    work.mkdir(parents=True)
    shutil.copytree(template, home / "zenml")
    config = home / "zenml" / "config.yaml"
    config.write_text(config.read_text().replace(str(template), str(home / "zenml")))
    return {**os.environ, "ZENML_CONFIG_PATH": str(home / "zenml")}, work


def _setup_blocks() -> list[tuple[str, str]]:
    out = []
    for doc in SETUP_DOCS:
        for block in bash_blocks(doc):
            if "zenml model-deployer register" in block and "zenml stack" in block:
                out.append((doc, block))
    return out


@pytest.mark.parametrize("doc,block", _setup_blocks(), ids=lambda v: str(v)[:40])
def test_setup_commands_work_on_a_fresh_config(fresh_template: Path, doc: str, block: str) -> None:
    env, work = fresh_config(fresh_template)
    run_block(block, env, work)
    code = (
        "from zenml.client import Client\n"
        "from zenml.enums import StackComponentType as T\n"
        "m = Client().active_stack_model\n"
        "print(m.components[T.MODEL_DEPLOYER][0].flavor_name)\n"
    )
    (work / "check.py").write_text(code)
    flavor = run_block("python check.py", env, work).strip()
    assert flavor.startswith("zmd-"), f"{doc}: the active stack has no zmd model deployer"


def test_every_setup_doc_has_a_tested_block() -> None:
    assert {doc for doc, _ in _setup_blocks()} == set(SETUP_DOCS)


def test_readme_pipeline_and_curl_as_written(fresh_template: Path) -> None:
    env, work = fresh_config(fresh_template)
    setup = next(b for d, b in _setup_blocks() if d == "README.md")
    run_block(setup, env, work)
    pipeline = next(b for b in python_blocks("README.md") if "mlflow_deployer_step" in b)
    (work / "run.py").write_text(pipeline)
    try:
        url = run_block("python run.py", env, work).strip().splitlines()[-1]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/invocations")
        curl = next(b for b in bash_blocks("README.md") if "get-url my-model" in b)
        answer = run_block(curl, env, work)
        assert json.loads(answer) == printed_answer(curl)
    finally:
        run_block("zmd models delete my-model -y", env, work)
