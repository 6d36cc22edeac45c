"""What the deploying process tells the front's supervisor (``local/supervisor.py``, in the
relay's process) and reads back from it.

The supervision spec (``supervise.json``, mode 0600) says how to restart the serving revision's
server after it died: its command, environment, port, health check and restart policy. It is
written when a revision starts serving, before any older server is retired (so that the
supervisor never takes a retirement for a crash). A canary's spec waits beside it
(``canary-supervise.json``) until a promotion hands it over. The supervisor's record
(``supervisor.json``) says which process serves now and how often it was restarted.

Resolved secrets never go into these files: the variables of the server's environment that
hold one (a ZenML secret reference in ``env``, the API key) are named in the spec
(``secret_env``) and their values handed to the front over its authenticated control channel
(the ``secrets`` command, before the spec is written), which keeps them in memory only. A
front started again (after its own death, or a reboot) is handed them again by the command
that starts it (``zmd models start``, a deploy), which resolves the references through ZenML.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zenml_model_deployers import secrets
from zenml_model_deployers.errors import DeploymentError
from zenml_model_deployers.local import process as proc
from zenml_model_deployers.local.config import LocalDeploymentConfig, LocalDeploymentStatus
from zenml_model_deployers.local.state import SPEC_FILE, read_json, supervision_of
from zenml_model_deployers.local.supervisor import write_spec

CANARY_SPEC = "canary-supervise.json"

logger = logging.getLogger(__name__)

# Sends one control command to the front (``Front.call``).
Tell = Callable[[dict[str, Any]], Any]


@dataclass(frozen=True)
class RestartPolicy:
    """How the supervisor restarts a dead server (see ``LocalProcessService.RESTART_LIMIT``).

    Attributes:
        limit: failed restarts in a row after which the revision is marked failed.
        backoff: (first, longest) wait in seconds before a repeated restart.
        stable_after: seconds up that end a crash episode.
    """

    limit: int
    backoff: tuple[float, float]
    stable_after: float


def supervision_spec(
    *,
    deployment_name: str,
    config: LocalDeploymentConfig,
    workdir: Path,
    server: proc.ProcessHandle,
    argv: list[str],
    env: dict[str, str],
    started_env: Mapping[str, str],
    port: int,
    log: Path,
    ready_timeout: float,
    policy: RestartPolicy,
    api_key: str | None,
    extra_secrets: Sequence[str] = (),
) -> dict[str, Any]:
    """The supervision spec of a ready server.

    Args:
        deployment_name: the deployment.
        config: the revision the server serves.
        workdir: the deployment's directory (the restarted server's working directory).
        server: the ready server.
        argv: the command that restarts it.
        env: the environment that restarts it (resolved secrets: :func:`split_secrets` keeps
            them out of the file).
        started_env: the environment it was started with (to find the secret values to
            redact).
        port: its port.
        log: its log.
        ready_timeout: seconds a restarted server gets to become ready.
        policy: the restart policy.
        api_key: the deployment's resolved API key (redacted too).
        extra_secrets: other secret values in the server's environment (the service's
            ``secret_values``): named in the file, their values kept in the front's memory.

    Returns:
        The spec (JSON-able).
    """
    return {
        "deployment": deployment_name,
        "argv": argv,
        "env": env,
        "cwd": str(workdir),
        "port": port,
        "server": server.model_dump(mode="json"),
        "log_path": str(log),
        "health_path": config.health_path,
        "health_method": config.health_method,
        "config_hash": config.config_hash(),
        "ready_timeout": ready_timeout,
        "max_restarts": policy.limit,
        "backoff_initial": policy.backoff[0],
        "backoff_max": policy.backoff[1],
        "stable_after": policy.stable_after,
        # Scrubbed from the log tail the supervisor records and from the fast `logs`.
        "redact": [
            started_env[k]
            for k, v in config.env.items()
            if k in started_env and secrets.is_secret_reference(v)
        ]
        + ([api_key] if api_key else [])
        + [v for v in extra_secrets if v],
    }


def split_secrets(spec: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Splits a supervision spec into what may be written to disk and what only the front's
    memory keeps.

    The variables of the spec's environment whose value is one of its secret values
    (``redact``: the resolved references of ``env``, the API key) leave the environment; the
    file names them (``secret_env``).

    Args:
        spec: a spec of :func:`supervision_spec`.

    Returns:
        (the spec to write, the ``secrets`` control command; None without secrets).
    """
    values = {str(v) for v in spec.get("redact") or [] if v}
    env = dict(spec.get("env") or {})
    secret_env = {k: v for k, v in env.items() if v in values}
    public = {k: v for k, v in spec.items() if k != "redact"}
    public["env"] = {k: v for k, v in env.items() if k not in secret_env}
    public["secret_env"] = sorted(secret_env)
    if not values:
        return public, None
    return public, {
        "cmd": "secrets",
        "server": spec.get("server"),
        "env": secret_env,
        "redact": sorted(values),
    }


def _write_spec(path: Path, spec: dict[str, Any], tell: Tell) -> None:
    """Hands the spec's secrets to the front, then writes the rest (the front has them before
    its supervisor reads the file)."""
    public, secrets_cmd = split_secrets(spec)
    if secrets_cmd is not None:
        try:
            tell(secrets_cmd)
        except DeploymentError as e:
            if "unknown command" not in str(e):
                raise
            # A front started by an older version (before an upgrade) reads them from the
            # file, as it did then; a `zmd models stop` + `start` ends that.
            logger.warning(
                "The front of '%s' predates keeping secrets in memory: they are written to "
                "its 0600 restart spec until `zmd models stop` and `zmd models start` "
                "restart it.",
                spec.get("deployment"),
            )
            write_spec(path, spec)
            return
    write_spec(path, public)


def hand_over(
    workdir: Path, spec: dict[str, Any] | None, status: LocalDeploymentStatus, tell: Tell
) -> None:
    """Hands the server just switched to over to the front's supervisor (a new revision: its
    restart count starts over).

    Args:
        workdir: the deployment's directory.
        spec: the server's supervision spec (None: nothing to supervise).
        status: the deployment's status (its restart count is reset).
        tell: sends a control command to the front (its secrets go there, never to disk).
    """
    if spec is not None:
        _write_spec(workdir / SPEC_FILE, spec, tell)
    status.restarts = 0


def resupply_secrets(
    workdir: Path, config_hash: str, env: Mapping[str, str], redact: list[str], tell: Tell
) -> None:
    """Hands a front that started again (it died, or after a reboot) the secrets of the server
    it supervises, resolved again by the caller through ZenML.

    Args:
        workdir: the deployment's directory.
        config_hash: the revision ``env`` and ``redact`` are of (other servers are skipped).
        env: the server's environment, secrets resolved (``restart_env`` of ``server_env``).
        redact: the secret values (the resolved references and the API key).
        tell: sends a control command to the front.
    """
    for name in (SPEC_FILE, CANARY_SPEC):
        spec = read_json(workdir / name)
        keys = (spec or {}).get("secret_env") or []
        if spec is None or spec.get("config_hash") != config_hash or not (keys or redact):
            continue
        tell(
            {
                "cmd": "secrets",
                "server": spec.get("server"),
                "env": {k: env[k] for k in keys if k in env},
                "redact": sorted({v for v in redact if v}),
            }
        )


def scrub_specs(workdir: Path, tell: Tell) -> None:
    """Moves the resolved secrets out of restart specs that a version before this one wrote
    (with their values, and the values to scrub, ``redact``) into the running front's memory.

    Args:
        workdir: the deployment's directory.
        tell: sends a control command to the front (which runs).
    """
    for name in (SPEC_FILE, CANARY_SPEC):
        spec = read_json(workdir / name)
        if spec is not None and spec.get("redact"):
            _write_spec(workdir / name, spec, tell)


def keep_canary_spec(workdir: Path, spec: dict[str, Any] | None, tell: Tell) -> None:
    """Keeps a canary server's spec aside until a promotion hands it over.

    Args:
        workdir: the deployment's directory.
        spec: the candidate server's supervision spec.
        tell: sends a control command to the front (the candidate's secrets go there).
    """
    if spec is not None:
        _write_spec(workdir / CANARY_SPEC, spec, tell)


def promote_canary_spec(workdir: Path) -> None:
    """The supervisor watches the promoted candidate's server from now on.

    Args:
        workdir: the deployment's directory.
    """
    spec_path = workdir / CANARY_SPEC
    if spec_path.exists():
        write_spec(workdir / SPEC_FILE, json.loads(spec_path.read_text()))
        spec_path.unlink(missing_ok=True)


def drop_canary_spec(workdir: Path) -> None:
    """Forgets a canary server's spec (the canary ended).

    Args:
        workdir: the deployment's directory.
    """
    (workdir / CANARY_SPEC).unlink(missing_ok=True)


def adopt_supervision(status: LocalDeploymentStatus, workdir: Path) -> dict[str, Any] | None:
    """The front's supervisor record for the recorded server, its current server adopted
    (a restarted server replaces the recorded one in ``status``).

    Args:
        status: the deployment's status (updated).
        workdir: the deployment's directory.

    Returns:
        The record (``supervisor.json``) or None when no supervisor watches this revision.
    """
    if status.server is None:
        return None
    sup = supervision_of(status.server.model_dump(mode="json"), workdir)
    if sup is None:
        return None
    if sup.get("server"):
        status.server = proc.ProcessHandle(**sup["server"])
    status.restarts = int(sup.get("restarts", 0))
    return sup


def wait_for_supervisor(
    status: LocalDeploymentStatus,
    workdir: Path,
    front_alive: Callable[[], bool],
    timeout: float,
) -> dict[str, Any] | None:
    """While the front restarts the server, waits (bounded) until it is done.

    Args:
        status: the deployment's status (updated as in :func:`adopt_supervision`).
        workdir: the deployment's directory.
        front_alive: whether the front (which restarts) still runs.
        timeout: seconds.

    Returns:
        The supervisor's last record, or None.
    """
    deadline = time.monotonic() + timeout
    while True:
        sup = adopt_supervision(status, workdir)
        if sup is None or sup.get("state") != "restarting" or not front_alive():
            return sup
        if time.monotonic() > deadline:
            return sup
        time.sleep(0.2)
