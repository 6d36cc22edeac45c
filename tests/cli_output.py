"""What `zmd` prints on stdout stays machine-readable, for a deployment of any flavor.

`curl "$(zmd models get-url NAME)"` (the README's) and `zmd models describe|list -o json | jq`
read stdout: it carries the command's result only. What ZenML or a backend's SDK logs (a
databricks-sdk warning, say) goes to stderr. The real `zmd` runs in a subprocess, as a shell
runs it: click's test runner would not see what ZenML's log handler writes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def run_zmd(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """The installed `zmd` in a subprocess (the test session's ZenML store), stdout and stderr
    apart.

    Args:
        *args: its arguments.
        cwd: its working directory (default: the test's).
        **env: environment variables to add.

    Returns:
        The finished process.
    """
    return subprocess.run(
        [str(Path(sys.executable).parent / "zmd"), *args],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=180,
    )


def assert_machine_readable(
    name: str, url: str, cwd: Path | None = None, **env: str
) -> dict[str, Any]:
    """`get-url` prints exactly the URL, one line; `describe -o json` and `list -o json` print
    JSON that parses and names the deployment; exit 0 for each.

    Args:
        name: the deployment's name.
        url: its prediction URL.
        cwd: where to run `zmd`.
        **env: environment variables to add (e.g. ``ZMD_FAST_LIST="0"``: ZenML's path).

    Returns:
        The described deployment (``describe -o json``).
    """
    got = run_zmd("models", "get-url", name, cwd=cwd, **env)
    assert got.returncode == 0, got.stderr
    assert got.stdout == url + "\n", (
        f"`zmd models get-url {name}` printed on stdout:\n{got.stdout}\n(stderr:\n{got.stderr})"
    )
    described = run_zmd("models", "describe", name, "-o", "json", cwd=cwd, **env)
    assert described.returncode == 0, described.stderr
    info = _json(described, f"zmd models describe {name} -o json")
    assert info["name"] == name and info["url"] == url, info
    listed = run_zmd("models", "list", "-o", "json", cwd=cwd, **env)
    assert listed.returncode == 0, listed.stderr
    rows = _json(listed, "zmd models list -o json")
    assert [r["url"] for r in rows if r["name"] == name] == [url], rows
    return dict(info)


def _json(done: subprocess.CompletedProcess[str], command: str) -> Any:
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError as e:
        raise AssertionError(
            f"`{command}` printed no JSON on stdout ({e}):\n{done.stdout}\n(stderr:\n{done.stderr})"
        ) from None
