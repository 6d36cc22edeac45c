"""A read-only fast path for `zmd models list` on a local ZenML store.

Importing ZenML and opening its store costs about 3 s on a small machine, whatever the number
of rows, which is most of a listing. When ZenML's store is the local SQLite database and every
deployment is served by local processes, the listing needs neither: this module reads the
service rows read-only with the standard library and checks the processes' liveness exactly as
``LocalProcessService.check_status`` does (shared: :func:`process_state`).

It returns None — and the caller takes ZenML's client path — whenever it is not sure that it
sees what ZenML would: a store that is not SQLite, store settings from the environment, a ZenML
repository (``.zen``) that may pin another project, an unknown schema, a remote flavor (whose
status must come from its API), or any error. ``ZMD_FAST_LIST=0`` turns it off.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

from zenml_model_deployers.local.process import ProcessHandle, process_state
from zenml_model_deployers.states import state_word

# Flavors whose status is process liveness (no remote API to ask).
LOCAL_FLAVORS = frozenset({"zmd-mlflow", "zmd-bentoml", "zmd-vllm"})
_COLUMNS = {
    "id",
    "project_id",
    "flavor",
    "config",
    "status",
    "created",
    "prediction_url",
    "service_source",
}


def _config_dir() -> Path:
    env = os.environ.get("ZENML_CONFIG_PATH")
    if env:
        return Path(env).resolve()
    import click

    return Path(click.get_app_dir("zenml"))


def _in_zenml_repository() -> bool:
    here = Path.cwd().resolve()
    env_repo = os.environ.get("ZENML_REPOSITORY_PATH")
    if env_repo:
        return True
    return any((p / ".zen").is_dir() for p in (here, *here.parents))


def _decode(blob: Any) -> dict[str, Any]:
    if blob is None:
        return {}
    if isinstance(blob, bytes | bytearray):
        blob = blob.decode()
    out: dict[str, Any] = json.loads(base64.b64decode(blob).decode())
    return out


def list_local_rows(flavor: str | None = None) -> list[dict[str, Any]] | None:
    """The rows `zmd models list` shows, or None when the fast path does not apply.

    Args:
        flavor: only this flavor.

    Returns:
        Rows (same keys as the CLI's JSON output), newest first, or None.
    """
    if os.environ.get("ZMD_FAST_LIST", "1") == "0":
        return None
    if (
        any(k.startswith("ZENML_STORE_") for k in os.environ)
        or "ZENML_ACTIVE_PROJECT_ID" in os.environ
    ):
        return None
    try:
        if _in_zenml_repository():
            return None
        import yaml

        gc = yaml.safe_load((_config_dir() / "config.yaml").read_text()) or {}
        store = gc.get("store") or {}
        url = str(store.get("url", ""))
        project = gc.get("active_project_id")
        if store.get("type") != "sql" or not url.startswith("sqlite:///") or not project:
            return None
        db = url[len("sqlite:///") :]
        if not Path(db).is_file():
            return None
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            cols = {r[1] for r in con.execute("PRAGMA table_info(service)")}
            if not _COLUMNS <= cols:
                return None
            rows = con.execute(
                "SELECT id, flavor, config, status, prediction_url FROM service "
                "WHERE flavor LIKE 'zmd-%' AND project_id = ? "
                "AND service_source IS NOT NULL AND service_source != '' "
                "ORDER BY created DESC",
                (str(project).replace("-", ""),),
            ).fetchall()
        finally:
            con.close()
    except Exception:
        return None
    out = []
    for rid, row_flavor, config_blob, status_blob, prediction_url in rows:
        if flavor and row_flavor != flavor:
            continue  # rows of other flavors, remote ones included, do not matter here
        if row_flavor not in LOCAL_FLAVORS:
            return None
        try:
            status = _decode(status_blob)
            config = status.get("live_config") or _decode(config_blob)
            server = ProcessHandle(**status["server"]) if status.get("server") else None
            relay = ProcessHandle(**status["relay"]) if status.get("relay") else None
        except Exception:
            return None
        state, _ = process_state(server, relay)
        out.append(
            {
                "id": _uuid(rid),
                "name": config.get("deployment_name", ""),
                "flavor": row_flavor,
                "state": state_word(state),
                "model": config.get("model_name", ""),
                "revision": status.get("revision", 0),
                "url": prediction_url if status.get("url") else None,
                "pipeline": config.get("pipeline_name", ""),
                "step": config.get("pipeline_step_name", ""),
            }
        )
    return out


def _uuid(raw: str) -> str:
    h = raw.replace("-", "")
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}" if len(h) == 32 else raw
