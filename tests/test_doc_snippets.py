"""The commands the README and the docs show, run as shown on a fresh ZenML config.

Each setup block (the bash blocks that register a model deployer) runs in its own fresh
config; the README's "Use it in your pipeline" runs end to end: setup, the pipeline, the curl,
whose answer must be the one the README prints.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

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


def _setup_blocks() -> list[tuple[str, str]]:
    out = []
    for doc in SETUP_DOCS:
        for block in bash_blocks(doc):
            if "zenml model-deployer register" in block and "zenml stack" in block:
                out.append((doc, block))
    return out


def _normalized(block: str) -> str:
    """A setup block as it runs: without `pip install` lines, comments and blank lines (two docs
    showing the same commands run them once)."""
    lines = (ln.split("  #")[0].rstrip() for ln in block.splitlines())
    return "\n".join(ln for ln in lines if ln and not ln.lstrip().startswith("pip install"))


def active_deployer_flavor(env: dict[str, str]) -> str | None:
    """The flavor of the active stack's model deployer, read from the config and its SQLite
    store (as ZenML's client would, without paying its start-up for every block)."""
    import sqlite3

    import yaml

    config = yaml.safe_load((Path(env["ZENML_CONFIG_PATH"]) / "config.yaml").read_text())
    db = config["store"]["url"].removeprefix("sqlite:///")
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        row = con.execute(
            "SELECT c.flavor FROM stack_composition s JOIN stack_component c"
            " ON s.component_id = c.id WHERE s.stack_id = ? AND c.type = 'model_deployer'",
            (config["active_stack_id"].replace("-", ""),),
        ).fetchone()
    return str(row[0]) if row else None


@pytest.fixture(scope="module")
def setup_runs(fresh_configs: Any) -> dict[str, tuple[dict[str, str], Path, str]]:
    """Every distinct setup block run on a fresh config of its own, two at a time (a block is
    three or four ZenML start-ups, one core each). Returns {normalized block: (env, work dir,
    "" or the failure)}."""
    from concurrent.futures import ThreadPoolExecutor

    def run(block: str) -> tuple[dict[str, str], Path, str]:
        env, work = fresh_configs.new("setup")
        try:
            run_block(block, env, work)
        except AssertionError as e:
            return env, work, str(e)
        return env, work, ""

    blocks = list(dict.fromkeys(_normalized(b) for _, b in _setup_blocks()))
    with ThreadPoolExecutor(2) as pool:
        return dict(zip(blocks, pool.map(run, blocks), strict=True))


@pytest.mark.parametrize("doc,block", _setup_blocks(), ids=lambda v: str(v)[:40])
def test_setup_commands_work_on_a_fresh_config(
    setup_runs: dict[str, tuple[dict[str, str], Path, str]], doc: str, block: str
) -> None:
    env, _, failure = setup_runs[_normalized(block)]
    assert not failure, f"{doc}: {failure}"
    flavor = active_deployer_flavor(env)
    assert flavor and flavor.startswith("zmd-"), f"{doc}: the active stack has no zmd deployer"


def test_every_setup_doc_has_a_tested_block() -> None:
    assert {doc for doc, _ in _setup_blocks()} == set(SETUP_DOCS)


def test_readme_pipeline_and_curl_as_written(
    setup_runs: dict[str, tuple[dict[str, str], Path, str]],
) -> None:
    """In the config the README's setup block made: its pipeline, then its curl."""
    setup = next(b for d, b in _setup_blocks() if d == "README.md")
    env, work, failure = setup_runs[_normalized(setup)]
    assert not failure, failure
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
