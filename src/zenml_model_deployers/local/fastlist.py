"""A read-only fast path for `zmd models list|describe|get-url|logs`, without ZenML.

Importing ZenML and opening its store costs about 3 s on a small machine, whatever the number
of rows, which is most of a listing. When every deployment concerned is served by local
processes, reading needs neither: this module reads the service rows

- from ZenML's local SQLite database, read-only with the standard library, or
- from a ZenML server (REST store), with one HTTP request per page and the API token ZenML's
  client stored (``credentials.yaml``),

and checks the processes' liveness (and the front's supervision record) exactly as
``LocalProcessService.check_status`` does (shared: :func:`local_state`).

Inside a ZenML repository (``zenml init``: a ``.zen`` folder here or above), it reads the
project that the repository's config names, as ZenML's client does (:func:`_store`).

It returns None — and the caller takes ZenML's client path — whenever it is not sure that it
sees what ZenML would: another store, store settings from the environment, a repository whose
config names no project yet (or one the store no longer has), an unknown schema, a remote
flavor (whose status must come from its API), a refused request, or any error.
``ZMD_FAST_LIST=0`` turns it off. A command about one deployment resolves its reference among
every row, remote ones included (:func:`row_refs`), and stays on this path when the one it
means is local.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

from zenml_model_deployers.flavors import FLAVOR_SOURCES, require_known_flavor
from zenml_model_deployers.local.state import local_state, supervision_of
from zenml_model_deployers.provenance import local_serving_fields
from zenml_model_deployers.secrets import is_secret_reference
from zenml_model_deployers.states import state_word

# Flavors whose status is process liveness (no remote API to ask).
# Rows of any other flavor (remote, or a user's custom flavor) take ZenML's client path.
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


def _repository_config_dir() -> Path | None:
    """The config folder (``.zen``) of the ZenML repository ZenML's client would use here, as
    ``Client.find_repository`` finds it: ``ZENML_REPOSITORY_PATH`` only (no parents) when set,
    else the working directory and its parents; None outside a repository."""
    name = os.environ.get("ZENML_REPOSITORY_DIRECTORY_NAME", ".zen")
    env_repo = os.environ.get("ZENML_REPOSITORY_PATH")
    if env_repo:
        candidates: tuple[Path, ...] = (Path(env_repo),)
    else:
        here = Path.cwd().resolve()
        candidates = (here, *here.parents)
    return next((p / name for p in candidates if (p / name).is_dir()), None)


def _decode(blob: Any) -> dict[str, Any]:
    if blob is None:
        return {}
    if isinstance(blob, bytes | bytearray):
        blob = blob.decode()
    out: dict[str, Any] = json.loads(base64.b64decode(blob).decode())
    return out


def _store() -> tuple[dict[str, Any], str] | None:
    """The active store's settings (ZenML's global config) and the active project's id, or
    None when ZenML could see another store or project (see module docstring).

    Inside a ZenML repository (``zenml init``), the project is the one its ``.zen/config.yaml``
    names, as ZenML's ``Client.active_project`` takes it over the global one. A repository
    config that names none yet is left to ZenML, which picks one (the user's default project)
    and writes it there; one that names a project the store no longer has is found out by the
    reader (no row in SQLite, a 404 from a server) and left to ZenML too.
    """
    if any(k.startswith("ZENML_STORE_") for k in os.environ) or (
        "ZENML_ACTIVE_PROJECT_ID" in os.environ
    ):
        return None
    import yaml

    gc = yaml.safe_load((_config_dir() / "config.yaml").read_text()) or {}
    store = gc.get("store") or {}
    project = gc.get("active_project_id")
    repo = _repository_config_dir()
    if repo is not None:
        repo_file = repo / "config.yaml"
        repo_config = yaml.safe_load(repo_file.read_text()) if repo_file.is_file() else None
        project = (repo_config or {}).get("active_project_id")
    return (store, str(project)) if project and isinstance(store, dict) else None


def sqlite_store() -> tuple[str, str] | None:
    """The local SQLite database of the active store and the active project's id (no dashes,
    as its rows store it), or None when the active store is another one.

    Returns:
        (database path, project id) or None.
    """
    try:
        found = _store()
    except Exception:
        return None
    if found is None:
        return None
    store, project = found
    url = str(store.get("url", ""))
    if store.get("type") != "sql" or not url.startswith("sqlite:///"):
        return None
    db = url[len("sqlite:///") :]
    return (db, project.replace("-", "")) if Path(db).is_file() else None


def decode_blob(blob: Any) -> dict[str, Any]:
    """A JSON column of ZenML's SQL store (base64 of JSON, as ZenML's ``dict_to_bytes``).

    Args:
        blob: the column's value.

    Returns:
        The dict ({} for NULL).
    """
    return _decode(blob)


def _store_rows() -> list[tuple[str, str, dict[str, Any], dict[str, Any], Any]] | None:
    """(id, flavor, config, status, prediction URL) of the service rows of zenml-model-deployers
    (zmd-* flavors and custom flavors built on it) in the active project, newest first, or None
    when the fast path does not apply."""
    if os.environ.get("ZMD_FAST_LIST", "1") == "0":
        return None
    try:
        active = _store()
        if active is None:
            return None
        store, project = active
        url = str(store.get("url", ""))
        if store.get("type") == "rest" and url.startswith(("http://", "https://")):
            return _rest_rows(url.rstrip("/"), str(project), bool(store.get("verify_ssl", True)))
        local = sqlite_store()
        if local is None:
            return None
        db, project = local
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            cols = {r[1] for r in con.execute("PRAGMA table_info(service)")}
            if not _COLUMNS <= cols:
                return None
            if con.execute("SELECT 1 FROM project WHERE id = ?", (project,)).fetchone() is None:
                return None  # ZenML falls back to another project (and says so)
            found = con.execute(
                "SELECT id, flavor, config, status, prediction_url, labels FROM service "
                "WHERE (flavor LIKE 'zmd-%' OR labels IS NOT NULL) AND project_id = ? "
                "AND service_source IS NOT NULL AND service_source != '' "
                "ORDER BY created DESC",
                (project,),
            ).fetchall()
        finally:
            con.close()
        # Users' custom flavors have names of their own: their rows are ours by label.
        return [
            (r[0], r[1], _decode(r[2]), _decode(r[3]), r[4])
            for r in found
            if str(r[1]).startswith("zmd-") or _ours(r[5])
        ]
    except Exception:
        return None


_REST_PAGE = 1000
_REST_TIMEOUT = 10.0


def _rest_token(url: str) -> str | None:
    """The API token ZenML's client stored for the server at ``url`` (if any, unexpired)."""
    from datetime import UTC, datetime, timedelta

    import yaml

    path = _config_dir() / "credentials.yaml"
    if not path.is_file():
        return None
    creds = (yaml.safe_load(path.read_text()) or {}).get(url) or {}
    token = creds.get("api_token") or {}
    access = token.get("access_token")
    if not access:
        return None
    expires = token.get("expires_at")
    if expires:
        at = datetime.fromisoformat(str(expires))
        at = at if at.tzinfo else at.replace(tzinfo=UTC)
        if at - timedelta(seconds=int(token.get("leeway") or 0)) < datetime.now(UTC):
            return None  # expired: ZenML's client knows how to renew it
    return str(access)


def _rest_rows(
    url: str, project: str, verify_ssl: bool
) -> list[tuple[str, str, dict[str, Any], dict[str, Any], Any]] | None:
    """The rows from a ZenML server: one authenticated REST request per page (usually one)
    with the credentials ZenML's client stored, as ``Client().list_services`` sends it.

    Any refusal (an expired or missing token on a server that needs one, an unknown API)
    returns None: ZenML's client path then logs in as it always does.
    """
    import ssl
    import urllib.parse
    import urllib.request

    headers = {"Accept": "application/json"}
    token = _rest_token(url)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    ctx = None if verify_ssl else ssl._create_unverified_context()
    out: list[tuple[str, str, dict[str, Any], dict[str, Any], Any]] = []
    page, pages = 1, 1
    while page <= pages:
        query = urllib.parse.urlencode(
            {
                "project": project,
                "hydrate": "true",
                "size": _REST_PAGE,
                "page": page,
                "sort_by": "desc:created",
            }
        )
        req = urllib.request.Request(f"{url}/api/v1/services?{query}", headers=headers)
        with urllib.request.urlopen(req, timeout=_REST_TIMEOUT, context=ctx) as resp:
            data = json.loads(resp.read())
        pages = int(data.get("total_pages") or 1)
        for item in data.get("items") or []:
            body, meta = item.get("body") or {}, item.get("metadata") or {}
            flavor = str((body.get("service_type") or {}).get("flavor", ""))
            ours = flavor.startswith("zmd-") or "zmd_deployment" in (body.get("labels") or {})
            if not ours or not meta.get("service_source"):
                continue
            out.append(
                (
                    str(item["id"]),
                    flavor,
                    meta.get("config") or {},
                    meta.get("status") or {},
                    meta.get("prediction_url"),
                )
            )
        page += 1
    return out


def _ours(labels_blob: Any) -> bool:
    """Whether a service row's labels are those every zenml-model-deployers service carries."""
    return "zmd_deployment" in _decode(labels_blob)


def _registered_flavors() -> list[str] | None:
    """The custom model-deployer flavors registered in the local SQLite store, as
    ``flavors.registered_flavors`` reads them through ZenML, or None (another store)."""
    try:
        local = sqlite_store()
        if local is None:
            return None
        con = sqlite3.connect(f"file:{local[0]}?mode=ro", uri=True, timeout=5)
        try:
            found = con.execute(
                "SELECT name FROM flavor WHERE type = 'model_deployer' AND is_custom"
            ).fetchall()
        finally:
            con.close()
    except Exception:
        return None
    return [str(r[0]) for r in found]


def _flavor_rows(
    flavor: str | None,
) -> list[tuple[str, str, dict[str, Any], dict[str, Any], Any]] | None:
    """:func:`_store_rows` of ``flavor`` (all of them without one), or None.

    Raises:
        ConfigurationError: ``flavor`` is unknown (as ZenML's path says it: see
            ``flavors.require_known_flavor``).
    """
    rows = _store_rows()
    if rows is None:
        return None
    picked = [row for row in rows if not flavor or row[1] == flavor]
    if flavor and not picked and flavor not in FLAVOR_SOURCES:
        registered = _registered_flavors()
        if registered is None:
            return None  # a server: ZenML's path asks it
        require_known_flavor(flavor, registered)
    return picked


def _live_row(
    rid: str, row_flavor: str, row_config: dict[str, Any], status: dict[str, Any], url: Any
) -> dict[str, Any] | None:
    """A local deployment's row with its live state (see :func:`local_rows`), or None when it
    cannot be read without ZenML."""
    try:
        config = status.get("live_config") or row_config
        server, relay = status.get("server"), status.get("relay")
        name = str(config.get("deployment_name", ""))
        workdir = _config_dir() / "zmd" / "local" / row_flavor / name
        sup = supervision_of(status.get("server"), workdir)
    except Exception:
        return None
    if sup and sup.get("server"):
        status["server"] = sup["server"]
    state, message = local_state(name, server, relay, sup)
    return {
        "id": _uuid(rid),
        "name": name,
        "flavor": row_flavor,
        "config": config,
        "status": status,
        "url": url if status.get("url") else None,
        "state": state,
        "message": message,
        "restarts": int(sup.get("restarts", 0)) if sup else int(status.get("restarts", 0)),
        "supervision": sup,
        "workdir": workdir,
    }


def local_rows(flavor: str | None = None) -> list[dict[str, Any]] | None:
    """Every deployment (of ``flavor``) with its live state, or None when the fast path does
    not apply (see module docstring).

    Args:
        flavor: only this flavor.

    Returns:
        Dicts with ``id``, ``name``, ``flavor``, ``config`` (the serving revision's), ``status``,
        ``url``, ``state``, ``message`` (as ``check_status`` says them), ``restarts`` and
        ``supervision``; newest first.
    """
    rows = _flavor_rows(flavor)  # rows of other flavors, remote ones included, do not matter
    if rows is None:
        return None
    out = []
    for row in rows:
        if row[1] not in LOCAL_FLAVORS:
            return None
        live = _live_row(*row)
        if live is None:
            return None
        out.append(live)
    return out


def row_refs(flavor: str | None = None) -> list[dict[str, Any]] | None:
    """Every deployment (of ``flavor``), remote ones included, as ``id``, ``name`` and
    ``flavor`` only: what a reference (id, id prefix, name) is resolved against. A remote row's
    state needs its API, but not to tell whether a reference means it; :func:`live_row` then
    reads the chosen one if it is local. None when the fast path does not apply.

    Args:
        flavor: only this flavor.

    Returns:
        The rows, newest first.
    """
    rows = _flavor_rows(flavor)
    if rows is None:
        return None
    out = []
    for row in rows:
        config = row[3].get("live_config") or row[2]
        name = config.get("deployment_name") if isinstance(config, dict) else None
        if not name:
            return None
        out.append({"id": _uuid(row[0]), "name": str(name), "flavor": row[1], "row": row})
    return out


def live_row(ref: dict[str, Any]) -> dict[str, Any] | None:
    """The row of :func:`local_rows` for a row of :func:`row_refs`, or None for a remote flavor
    (or one that cannot be read without ZenML).

    Args:
        ref: a row of :func:`row_refs`.

    Returns:
        The row.
    """
    if ref["flavor"] not in LOCAL_FLAVORS:
        return None
    return _live_row(*ref["row"])


def list_local_rows(flavor: str | None = None, stats: bool = False) -> list[dict[str, Any]] | None:
    """The rows `zmd models list` shows, or None when the fast path does not apply.

    Args:
        flavor: only this flavor.
        stats: add each row's ``stats`` (:func:`row_stats`: one control request per running
            deployment).

    Returns:
        Rows (same keys as the CLI's JSON output), newest first, or None.
    """
    rows = local_rows(flavor)
    if rows is None:
        return None
    return [
        {
            "id": r["id"],
            "name": r["name"],
            "flavor": r["flavor"],
            "state": state_word(r["state"]),
            "model": r["config"].get("model_name", ""),
            "revision": r["status"].get("revision", 0),
            "url": r["url"],
            "restarts": r["restarts"],
            "pipeline": r["config"].get("pipeline_name", ""),
            "step": r["config"].get("pipeline_step_name", ""),
            **({"stats": row_stats(r)} if stats else {}),
        }
        for r in rows
    ]


# Flavors whose `describe()` is DeploymentService's own (BentoML adds its bento's APIs).
_PLAIN_DESCRIBE = frozenset({"zmd-mlflow"})


def describe_row(row: dict[str, Any]) -> dict[str, Any] | None:
    """What `zmd models describe` shows for a row of :func:`local_rows` (same keys, same
    values as the ZenML path), or None when only the service class knows.

    Args:
        row: a row of :func:`local_rows`.

    Returns:
        The description, or None.
    """
    config, status = row["config"], row["status"]
    if (
        row["flavor"] not in _PLAIN_DESCRIBE
        or not status.get("config_hash")
        or status.get("canary_config")
    ):
        return None
    url = status.get("url")
    return {
        "flavor": row["flavor"],
        "name": row["name"],
        "revision": status.get("revision", 0),
        "service_id": row["id"],
        "model_uri": config.get("model_uri", ""),
        "model_name": config.get("model_name", ""),
        "config_hash": status["config_hash"],
        "url": row["url"],
        "health_url": f"{url}{config.get('health_path', '/ping')}" if url else None,
        "state": state_word(row["state"]),
        "canary": None,
        # ZenML's status update keeps the previous error when the check reports none.
        "status_message": row["message"] or status.get("last_error", ""),
        "deployed_at": status.get("deployed_at"),
        "pipeline": config.get("pipeline_name", ""),
        "step": config.get("pipeline_step_name", ""),
        "run": config.get("run_name", ""),
        "config": local_serving_fields(config),
        "log_path": status.get("log_path"),
        "restarts": row["restarts"],
        "metrics_url": (
            f"http://127.0.0.1:{status['metrics_port']}/metrics"
            if status.get("metrics_port") and row["state"] == "active"
            else None
        ),
    }


def log_redactions(row: dict[str, Any]) -> list[str] | None:
    """The secret values to scrub from a row's server log, or None when only ZenML's secret
    store knows them (the log then takes the ZenML path).

    Resolved secrets are kept nowhere on disk (the front holds the server's in memory), so a
    config that references one takes the ZenML path, which resolves them to scrub them.

    Args:
        row: a row of :func:`local_rows`.

    Returns:
        Values (empty when the config references no secret), or None.
    """
    config = row["config"]
    env = config.get("env") or {}
    if config.get("api_key") or any(is_secret_reference(str(v)) for v in env.values()):
        return None
    return []


STATS_WINDOW = 300.0


def row_stats(row: dict[str, Any], window: float = STATS_WINDOW) -> dict[str, Any] | str | None:
    """Per revision, the last `window` seconds as the deployment's relay counted them
    (requests, req/s, error rate, p50/p95), or None when its front does not run.

    Args:
        row: a row of :func:`local_rows`.
        window: seconds.

    Returns:
        revision (config hash) -> summary, or None.
    """
    from zenml_model_deployers.local.relay_control import control_request, read_ready_file
    from zenml_model_deployers.local.relay_metrics import summarize

    port = row["status"].get("control_port")
    if row["state"] != "active" or not port:
        return None
    try:
        token = str(read_ready_file(row["workdir"] / "relay.json").get("token", ""))
        reply = control_request(int(port), token, {"cmd": "metrics", "window": window}, 5)
    except (OSError, ValueError):
        return None
    return summarize(reply) if reply.get("ok") else None


def _uuid(raw: str) -> str:
    h = raw.replace("-", "")
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}" if len(h) == 32 else raw
