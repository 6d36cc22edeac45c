"""What a local deployment is asked to be and where it is: ``LocalDeploymentConfig`` (the
serving settings every local backend shares; ``DirectDataPathConfig`` adds the data path of the
flavors that have a direct one), ``LocalDeploymentStatus`` (its processes and
ports, as the service store records them), and where its files live (``zmd_home``,
``private_dir``).

Both classes are re-exported from ``local/service.py``, where ZenML recorded their source paths.
"""

from __future__ import annotations

import contextlib
import ipaddress
from pathlib import Path
from typing import Any, ClassVar, Literal

from zenml_model_deployers import secrets
from zenml_model_deployers.config import DeploymentConfig
from zenml_model_deployers.errors import ConfigurationError
from zenml_model_deployers.local import process as proc
from zenml_model_deployers.provenance import LOCAL_PROVENANCE_FIELDS, local_serving_fields
from zenml_model_deployers.service import DeploymentStatus


def zmd_home() -> Path:
    """The product's directory inside the ZenML config dir (so isolated configs isolate it too).

    Returns:
        A path.
    """
    from zenml.utils.io_utils import get_global_config_directory

    return Path(get_global_config_directory()) / "zmd"


def private_dir(path: Path) -> Path:
    """Creates a folder only its owner can enter (0700), and makes its parents up to the
    product's directory private too (they are created with the umask's mode).

    Args:
        path: the folder.

    Returns:
        The path.
    """
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    home = zmd_home()
    for p in (path, *path.parents):
        if p != home and home not in p.parents:
            break
        with contextlib.suppress(OSError):  # a folder of another owner stays as it is
            if p.stat().st_mode & 0o077:
                p.chmod(0o700)
    return path


def is_loopback(host: str) -> bool:
    """Tells whether an address is reachable from this machine only.

    Args:
        host: an address or host name ("" and "0.0.0.0" mean every interface).

    Returns:
        True for 127.0.0.0/8, ::1 and localhost.
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class LocalDeploymentConfig(DeploymentConfig):
    """Serving settings shared by local backends.

    Attributes:
        host: address the deployment's URL binds to.
        port: pin the deployment's public port (None: a free port, kept across revisions).
        api_key: a ZenML secret reference (``{{secret.key}}``) to the key every request to the
            URL must carry as ``Authorization: Bearer <key>`` (None: no key).
        allow_unauthenticated: accept a non-loopback ``host`` without an ``api_key``.
        metrics_port: pin the port of the relay's Prometheus metrics (``GET /metrics`` on
            127.0.0.1; None: a free port, shown by ``zmd models describe``).
    """

    FORMER_SOURCES: ClassVar[tuple[str, ...]] = (
        "zenml_model_deployers.local.service.LocalDeploymentConfig",
    )

    PROVENANCE_FIELDS = LOCAL_PROVENANCE_FIELDS

    host: str = "127.0.0.1"
    port: int | None = None
    api_key: str | None = None
    allow_unauthenticated: bool = False
    metrics_port: int | None = None

    def serving_fields(self) -> dict[str, Any]:
        """See DeploymentConfig.serving_fields; the fields of
        ``provenance.HASHED_ONLY_WHERE_SET`` only where set, so that the hashes of deployments
        made before those fields existed stay what they were.

        Returns:
            A JSON-able dict.
        """
        return local_serving_fields(self.model_dump(mode="json"))

    def __init__(self, **data: Any) -> None:
        """Validates the port range, the key reference, and refuses an exposed deployment
        without a key unless the user accepted that explicitly.

        Args:
            **data: fields.
        """
        super().__init__(**data)
        if self.port is not None and not (0 < self.port < 65536):
            raise ValueError(f"port {self.port} is out of range 1-65535.")
        if self.metrics_port is not None and not (0 < self.metrics_port < 65536):
            raise ValueError(f"metrics_port {self.metrics_port} is out of range 1-65535.")
        if self.api_key is not None and not secrets.is_secret_reference(self.api_key):
            # Never echo the value: it may be the key itself.
            raise ValueError(
                "api_key must be a ZenML secret reference such as {{my-model-key.api_key}}, "
                "never the key itself (configs are stored in the service store and artifacts): "
                "`zenml secret create my-model-key -i` (key `api_key`)."
            )
        if not is_loopback(self.host) and not self.api_key and not self.allow_unauthenticated:
            raise ValueError(
                f"host {self.host!r} exposes deployment '{self.deployment_name}' beyond this "
                "machine without an API key: anyone who can reach this address could send it "
                "requests, read its predictions and load it. Set api_key='{{secret.key}}' (a "
                "ZenML secret), bind to 127.0.0.1, or pass allow_unauthenticated=True to accept "
                "that risk."
            )


class DirectDataPathConfig(LocalDeploymentConfig):
    """The settings of a local flavor whose server can take the front's socket itself
    (``LocalProcessService.SUPPORTS_DIRECT_DATA_PATH``: `zmd-mlflow`, `zmd-bentoml`).

    Attributes:
        data_path: ``"auto"`` (default): the direct data path wherever it is eligible (no
            ``api_key``, a loopback ``host``, and what the flavor adds), with the front
            stepping into the data path by itself for a canary or progressive rollout and out
            again once it ends; the relay otherwise. ``"relay"``: every request always passes
            through the deployment's front (API key, the relay's request limits, canaries and
            progressive rollouts, replay during an update). ``"direct"``: the serving
            revision's uvicorn workers accept on the front's listening socket themselves and
            the front stands in the data path only while a revision is switched: the server's
            full throughput and latency, but no API key and no canary or rollout (both
            refused). Per-request metrics, updates, self-heal, stop and start keep the URL and
            lose no request on every path.
    """

    data_path: Literal["auto", "relay", "direct"] = "auto"

    def __init__(self, **data: Any) -> None:
        """Refuses the direct data path with an API key (the front checks keys, and requests
        bypass it there).

        Args:
            **data: fields.

        Raises:
            ConfigurationError: ``data_path="direct"`` with an ``api_key``.
        """
        super().__init__(**data)
        if self.data_path == "direct" and self.api_key:
            raise ConfigurationError(
                f"Deployment '{self.deployment_name}' asks for data_path='direct' and an "
                "api_key: on the direct data path requests reach the model server without "
                "passing the front, which is what checks the key.",
                deployment_name=self.deployment_name,
                hint="drop data_path='direct' (the default 'auto' keeps the relay in the data path "
                "when there is a key, and the relay checks it), or the key.",
            )


class LocalDeploymentStatus(DeploymentStatus):
    """Where the local processes of a deployment are.

    Attributes:
        public_port: the relay's port (the URL's port), kept across revisions and restarts.
        relay: the relay process.
        control_port: the relay's control port.
        server: the serving revision's process.
        server_port: its private port.
        log_path: its log file.
        restarts: how many times the front restarted this revision's server after it died.
        metrics_port: the relay's Prometheus port (127.0.0.1, ``GET /metrics``).
        canary_server: during a canary, the candidate revision's process.
        canary_port: its private port.
        canary_log_path: its log file.
        direct: the serving server accepts on the public socket itself (the direct data
            path): the relay is out of the data path; ``server_port`` is the server's private
            port, where the relay forwards when it steps in (a server of an older version
            that took the socket at its start has none).
    """

    FORMER_SOURCES: ClassVar[tuple[str, ...]] = (
        "zenml_model_deployers.local.service.LocalDeploymentStatus",
    )

    public_port: int | None = None
    relay: proc.ProcessHandle | None = None
    control_port: int | None = None
    server: proc.ProcessHandle | None = None
    server_port: int | None = None
    log_path: str | None = None
    restarts: int = 0
    metrics_port: int | None = None
    canary_server: proc.ProcessHandle | None = None
    canary_port: int | None = None
    canary_log_path: str | None = None
    direct: bool = False


def url_host(host: str) -> str:
    """The host of a deployment's URL for the address it binds (every interface: loopback).

    Args:
        host: the bound address.

    Returns:
        A host for URLs.
    """
    return "127.0.0.1" if host in ("0.0.0.0", "") else host


def health_host(host: str) -> str:
    """Where a socket bound to ``host`` answers from this machine.

    Args:
        host: the bound address.

    Returns:
        An address to connect to.
    """
    return "127.0.0.1" if host in ("0.0.0.0", "::") or is_loopback(host) else host
