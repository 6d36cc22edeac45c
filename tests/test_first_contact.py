"""First contact on a fresh ZenML config: every hint and setup command works as printed."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from doc_transcripts import assert_same_shape, expected

CLI_DOC = "docs/cli.md"


def _fresh_env(fresh_configs: Any) -> tuple[dict[str, str], Path]:
    env, work = fresh_configs.new("first-contact")
    env["ZENML_ENABLE_RICH_TRACEBACK"] = "true"  # as on a user's terminal
    env["COLUMNS"] = "200"
    return env, work


def sh(
    cmd: str, env: dict[str, str], cwd: Path, ok: bool = True
) -> subprocess.CompletedProcess[str]:
    """Runs a command line as a user would type it (bash)."""
    done = subprocess.run(
        ["bash", "-c", cmd], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )
    if ok:
        assert done.returncode == 0, f"{cmd}\n{done.stdout}\n{done.stderr}"
    return done


def _next(out: str) -> str:
    line = next(ln for ln in out.splitlines() if ln.startswith("Next: "))
    return line.removeprefix("Next: ")


def _python(code: str, env: dict[str, str], cwd: Path, ok: bool = True) -> str:
    """Runs a script file (ZenML needs a main file to find a source root)."""
    script = cwd / "snippet.py"
    script.write_text(code)
    done = sh(f"python {script}", env, cwd, ok)
    return (done.stdout + done.stderr).strip()


def _deployer_of_active_stack(env: dict[str, str], cwd: Path) -> str:
    code = (
        "from zenml.client import Client\n"
        "print(Client().active_stack_model.name, Client().active_stack.model_deployer.name)\n"
    )
    return _python(code, env, cwd)


def test_the_printed_next_steps_work_on_a_fresh_config_and_on_a_users_stack(
    fresh_configs: Any,
) -> None:
    """...and print what docs/cli.md shows (its `zmd flavors register` transcripts)."""
    env, tmp_path = _fresh_env(fresh_configs)
    # Fresh config: the active stack is `default`, which ZenML refuses to modify.
    out = sh("zmd flavors register", env, tmp_path).stdout
    assert_same_shape("zmd flavors register", expected(CLI_DOC, "zmd flavors register"), out)
    first = _next(out)
    assert "zenml stack update" not in first and "--set" in first
    sh(first, env, tmp_path)
    assert _deployer_of_active_stack(env, tmp_path) == "zmd-stack local"

    # The library's own hint (no zmd deployer on the active stack) is right there as well.
    sh("zenml stack set default", env, tmp_path)
    code = "from zenml_model_deployers.flavors import get_deployer\nget_deployer()\n"
    err = _python(code, env, tmp_path, ok=False)
    assert "zenml stack register zmd-stack-2 -o default -a default -d local --set" in err

    # A stack of the user's own, without a model deployer: the hint updates that stack and
    # reuses the registered component.
    sh("zenml stack register mine -o default -a default", env, tmp_path)
    shown = "zenml stack set mine && zmd flavors register"
    out = sh(shown, env, tmp_path).stdout
    second = _next(out)
    assert second == "zenml stack update mine -d local"
    assert _next(expected(CLI_DOC, shown)) == second
    sh(second, env, tmp_path)
    assert _deployer_of_active_stack(env, tmp_path) == "mine local"
    third = _next(sh("zmd flavors register", env, tmp_path).stdout)
    assert third.startswith("the active stack 'mine' deploys with 'local' (zmd-mlflow)")
    assert _next(expected(CLI_DOC, "zmd flavors register", nth=1)) == third


@pytest.fixture(scope="module")
def refusing_config(fresh_configs: Any) -> tuple[dict[str, str], Path]:
    """One fresh config with the flavors registered, shared: a refused registration creates
    nothing (else the next case's `register bad` would fail on the name instead)."""
    env, work = _fresh_env(fresh_configs)
    sh("zmd flavors register", env, work)
    return env, work


@pytest.mark.parametrize(
    "flavor,args",
    [
        ("zmd-huggingface", "--token=hf_plainTOKENvalue123"),
        ("zmd-mlflow", "--default_timeout=-5x"),
        ("zmd-bentoml", "--default_timeout=soon"),
    ],
)
def test_a_refused_registration_is_one_line_and_the_fix(
    refusing_config: tuple[dict[str, str], Path], flavor: str, args: str
) -> None:
    env, tmp_path = refusing_config
    done = sh(f"zenml model-deployer register bad --flavor={flavor} {args}", env, tmp_path, False)
    assert done.returncode != 0
    out = (done.stdout + done.stderr).strip()
    assert "Traceback" not in out and "│" not in out, out  # no (rich) traceback
    assert len(out.splitlines()) <= 3, out
    if flavor == "zmd-huggingface":
        assert "hf_plainTOKENvalue123" not in out
        assert "zenml secret create" in out and "{{hf_token.token}}" in out
    else:
        assert "default_timeout" in out
