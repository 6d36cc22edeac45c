"""The commands the README and the docs show, run as shown on fresh ZenML configs.

- Each distinct setup block (the bash blocks that register a model deployer) runs on a fresh
  config of its own; the README's "Use it in your pipeline" then runs its pipeline and its curl
  in the README block's config, whose answer must be the one the README prints.
- docs/quickstart.md's walk-through (the demo, again, with another C, stop/start/delete, undo)
  and every `zmd` transcript of docs/cli.md (`$ command` then its output) run on one more fresh
  config; each command's output must have the shape the doc shows (doc_transcripts.py).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from doc_transcripts import assert_same_shape, expected, plain_blocks, shape, transcripts

ROOT = Path(__file__).resolve().parents[1]
SETUP_DOCS = [
    "README.md",
    "docs/quickstart.md",
    "docs/flavors/mlflow.md",
    "docs/flavors/bentoml.md",
    "docs/flavors/huggingface.md",
    "docs/flavors/seldon.md",
    "docs/flavors/kserve.md",
    "docs/flavors/databricks.md",
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


def prompt_answers(block: str) -> str:
    """What a user types at the prompts of a block's `zenml secret create NAME -i`: for each,
    the key the block references the secret by (`{{NAME.KEY}}`), a dummy value, and "n" (no
    other key)."""
    answers = []
    for name in re.findall(r"zenml secret create (\S+) -i\b", block):
        for key in dict.fromkeys(re.findall(r"\{\{" + re.escape(name) + r"\.(\w+)\}\}", block)):
            answers += [key, f"dummy-{key}", "n"]
    return "".join(f"{a}\n" for a in answers)


def run_block(block: str, env: dict[str, str], cwd: Path) -> str:
    """Runs a doc block with bash, as a user pastes it (`pip install` lines skipped: the
    package is installed), failing on the first command that fails; `-i` prompts are answered
    on stdin (a session of its own: no terminal for getpass to open)."""
    lines = [ln for ln in block.splitlines() if not ln.lstrip().startswith("pip install")]
    done = subprocess.run(
        ["bash", "-e", "-c", "\n".join(lines)],
        env=env,
        cwd=cwd,
        input=prompt_answers(block),
        capture_output=True,
        text=True,
        timeout=300,
        start_new_session=True,
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


# ---------------------------------------------------------------------------------------------
# The quickstart as docs/quickstart.md walks through it, and docs/cli.md's transcripts, run on
# one fresh config: `make demo` is `python examples/quickstart/run.py` (what the target runs,
# without its install step), `.venv/bin/zmd` is the `zmd` on PATH.


def sh(command: str, env: dict[str, str], cwd: Path, stdin: str = "") -> tuple[int, str]:
    """Runs a command line with bash; (exit status, stdout and stderr as a terminal shows)."""
    command = command.replace(".venv/bin/zmd", "zmd").replace("make demo", DEMO)
    done = subprocess.run(
        ["bash", "-c", command],
        env=env,
        cwd=cwd,
        input=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )
    return done.returncode, done.stdout


DEMO = f"python {ROOT / 'examples' / 'quickstart' / 'run.py'}"


PROGRESS = re.compile(r"Waiting for .* \.\.\. \d+ s")


class Transcripts:
    """Runs docs/cli.md's commands and checks each printed what the doc shows."""

    def __init__(self, env: dict[str, str], work: Path) -> None:
        self.env, self.work = env, work
        self.checked: set[str] = set()
        self.mismatches: list[str] = []

    def run(self, command: str, ok: bool = True, stdin: str = "") -> str:
        t0 = time.monotonic()
        code, out = sh(command, self.env, self.work, stdin)
        print(f"{time.monotonic() - t0:6.1f} s  {command[:70]!r}")
        assert (code == 0) == ok, f"`{command}` exited {code}:\n{out}"
        return out

    def check(
        self, command: str, nth: int = 0, ok: bool = True, stdin: str = "", run_as: str = ""
    ) -> str:
        """Runs a transcript's command (or ``run_as``, the same with this run's values) and
        compares its output with the doc's."""
        out = self.run(run_as or command, ok, stdin)
        # A terminal echoes what the user types; a slow start prints a progress line every
        # 10 s (docs/architecture.md), which no transcript shows.
        shown = out.replace("[y/N]: ", "[y/N]: " + stdin, 1) if stdin else out
        shown = "\n".join(ln for ln in shown.splitlines() if not PROGRESS.match(ln))
        try:
            assert_same_shape(command, expected("docs/cli.md", command, nth), shown)
        except AssertionError as e:  # all of them are reported, at the end
            self.mismatches.append(str(e))
        self.checked.add(command)
        return out

    def assert_matched(self) -> None:
        """Every transcript checked so far printed what the doc shows (all reported at once)."""
        mismatches, self.mismatches = self.mismatches, []
        assert not mismatches, "\n\n".join(mismatches)


# churn-model: a second deployment, made with the Python API (docs/architecture.md), and its
# predict() from a DataFrame (sent as MLflow's dataframe_split).
CHURN = """
import pandas as pd
from zenml_model_deployers.flavors import get_deployer

deployer = get_deployer("zmd-mlflow")
config = deployer.build_config(
    model_uri={uri!r}, deployment_name="churn-model", model_name="churn-model"
)
service = deployer.deploy(config, timeout=120)
print(service.predict(pd.DataFrame([[1.0, 2.0]], columns=["a", "b"])))
"""


def _pids_of(env: dict[str, str], name: str) -> list[int]:
    """The processes of a local deployment: those started in its directory (servers and
    their children) and its front (which names its ready file there)."""
    import psutil

    workdir = str(Path(env["ZENML_CONFIG_PATH"]) / "zmd" / "local" / "zmd-mlflow" / name)
    pids = []
    for p in psutil.process_iter(["cwd", "cmdline"]):
        try:
            if p.info["cwd"] == workdir or f"{workdir}/" in " ".join(p.info["cmdline"] or []):
                pids.append(p.pid)
        except psutil.Error:
            continue
    return pids


def _list(env: dict[str, str], work: Path) -> dict[str, dict[str, Any]]:
    code, out = sh("zmd models list -o json", env, work)
    assert code == 0, out
    return {row["name"]: row for row in json.loads(out)}


def _describe(env: dict[str, str], work: Path, name: str) -> dict[str, Any]:
    code, out = sh(f"zmd models describe {name} -o json", env, work)
    assert code == 0, out
    return dict(json.loads(out))


@pytest.fixture(scope="module")
def walk(fresh_configs: Any) -> Iterator[Transcripts]:
    """One fresh config the quickstart and the cli.md transcripts run in, in order (the tests
    below build on each other, like the conformance suite; each stays within the per-test
    timeout on a loaded machine). Its deployments are deleted at the end."""
    env, work = fresh_configs.new("quickstart")
    t = Transcripts(env, work)
    yield t
    for name in ("iris-classifier", "churn-model"):
        sh(f"zmd models delete {name} -y", env, work)


def _quickstart_blocks() -> dict[str, str]:
    """docs/quickstart.md's bash blocks by their first command."""
    return {re.sub(r"\s+#.*", "", b.splitlines()[0]): b for b in bash_blocks("docs/quickstart.md")}


def test_quickstart_demo_rerun_and_new_model_as_written(walk: Transcripts) -> None:
    """Sections 1-3 of docs/quickstart.md: the demo says what it changes, prints the URL from
    the run and 3 predictions; the README's and the quickstart's curl answer what they show;
    run again nothing restarts; another C rolls out revision 2 on the same URL."""
    t, env, work, qs = walk, walk.env, walk.work, _quickstart_blocks()
    out = t.run(qs["make demo"])
    shown = plain_blocks("docs/quickstart.md")
    # Its stack notice and what predict prints (the quickstart's), the README's excerpt.
    for block in [*shown[:2], *plain_blocks("README.md")]:
        for line in shape(block):
            assert line in shape(out), f"the quickstart shows {line!r}; the demo printed\n{out}"
    readme = next(b for b in bash_blocks("README.md") if "get-url iris-classifier" in b)
    assert json.loads(t.run(readme)) == printed_answer(readme)
    first = _list(env, work)["iris-classifier"]
    curl = next(b for b in bash_blocks("docs/quickstart.md") if b.startswith("curl"))
    curl_here = re.sub(r"http://127\.0\.0\.1:\d+/invocations", first["url"], curl)
    assert json.loads(t.run(curl_here)) == printed_answer(curl)
    served = _describe(env, work, "iris-classifier")

    # Again, as in a config of its own: the same revision, the same server (its log file is
    # named by its start), the same URL.
    own = qs["export ZENML_CONFIG_PATH=/tmp/zmd-demo"]
    t.run(own.replace("/tmp/zmd-demo", env["ZENML_CONFIG_PATH"]))
    assert _list(env, work)["iris-classifier"] == first
    again = _describe(env, work, "iris-classifier")
    assert (again["log_path"], again["deployed_at"]) == (served["log_path"], served["deployed_at"])

    t.run(qs["DEMO_C=0.1 make demo"])
    now = _list(env, work)["iris-classifier"]
    assert now["revision"] == first["revision"] + 1 and now["url"] == first["url"]
    listed = t.run(qs[".venv/bin/zmd models list"])
    assert_same_shape("zmd models list", shown[2], listed)


def test_cli_transcripts_start_all_and_reads(walk: Transcripts, models_dir: Path) -> None:
    """docs/cli.md: `start --all` after a "reboot" (one deployment's processes killed, another
    running), then the read commands with a running and a stopped deployment."""
    t, env, work = walk, walk.env, walk.work
    (work / "churn.py").write_text(CHURN.format(uri=str(models_dir / "b")))
    assert t.run("python churn.py").strip().splitlines()[-1] == "[1]"
    for pid in _pids_of(env, "iris-classifier"):
        os.kill(pid, signal.SIGKILL)
    t.check("zmd models start --all")
    assert _list(env, work)["iris-classifier"]["state"] == "running"
    t.run("zmd models stop churn-model")

    t.check("zmd models describe nope", ok=False)
    t.check("zmd flavors list")
    t.check("zmd models list")
    t.check("zmd models list --running -o json")
    t.check("zmd models describe iris-classifier")
    t.check("zmd models get-url iris-classifier")
    t.check(next(c for c, _ in transcripts("docs/cli.md") if c.startswith("curl")))
    t.check("zmd models logs iris-classifier --tail 3")
    t.assert_matched()


def test_cli_transcripts_port_taken_delete_recreate(walk: Transcripts) -> None:
    """docs/cli.md: stop; the recorded port taken meanwhile, `--port` moves it; delete with
    the prompt, delete again (a no-op, exit 0); recreate from the demo's last run."""
    t, env, work = walk, walk.env, walk.work
    run_name = _describe(env, work, "iris-classifier")["run"]
    url = _list(env, work)["iris-classifier"]["url"]
    t.check("zmd models stop iris-classifier")
    port = int(url.split(":")[2].split("/")[0])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        t.check("zmd models start iris-classifier", nth=1, ok=False)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            free = probe.getsockname()[1]
        moved = t.check(
            "zmd models start iris-classifier --port 8081",
            run_as=f"zmd models start iris-classifier --port {free}",
        )
        assert f":{free}/invocations" in moved
    t.check("zmd models delete iris-classifier", stdin="y\n")
    out = t.check("zmd models delete iris-classifier -y; echo $?")
    assert out.splitlines()[-1] == "0"
    t.check(
        "zmd models recreate --run train_and_deploy-2025_06_02-09_14_31_512204",
        run_as=f"zmd models recreate --run {run_name}",
    )
    t.assert_matched()


def test_quickstart_stop_start_delete_and_undo_then_an_empty_list(walk: Transcripts) -> None:
    """Section 4 of docs/quickstart.md as written (its `start` is cli.md's first `start`
    transcript), then what the demo registered removed; with no deployment left, cli.md's
    empty list. Every `zmd` transcript of docs/cli.md ran (the `flavors register` ones run in
    test_first_contact.py, `promote` in test_databricks_lifecycle.py)."""
    t, qs = walk, _quickstart_blocks()
    out = t.run(qs[".venv/bin/zmd models stop iris-classifier"]).splitlines()
    started = next(ln for ln in out if ln.startswith("Deployment 'iris-classifier' serves"))
    assert_same_shape(
        "zmd models start", expected("docs/cli.md", "zmd models start iris-classifier"), started
    )
    t.checked.add("zmd models start iris-classifier")
    t.run(qs["zenml stack delete zmd-quickstart -y"])
    t.run("zmd models delete churn-model -y")
    t.check("zmd models list", nth=1)
    t.check("zmd models list -o json")
    t.assert_matched()
    ours = {c for c, _ in transcripts("docs/cli.md")} - {
        "zmd flavors register",
        "zenml stack set mine && zmd flavors register",
        "zmd models promote fraud-model",
    }
    assert ours - t.checked == set(), "transcripts of docs/cli.md no test runs"
