"""`zmd`: list, describe, start, stop, delete and recreate deployments.

Imports lazily: `zmd --help` imports neither ZenML nor any backend, and a command imports
only the backends of the deployments it touches. Errors are one line and a non-zero exit.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import click

from zenml_model_deployers.lookup import all_services, fast_row, resolve_deployment

if TYPE_CHECKING:
    from zenml_model_deployers.service import DeploymentService

F = TypeVar("F", bound=Callable[..., Any])


def _friendly_errors(func: F) -> F:
    """Turns our typed errors (and ZenML's lookups) into one clear line and exit code 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from zenml_model_deployers.errors import DeploymentError

        try:
            return func(*args, **kwargs)
        except DeploymentError as e:
            msg = str(e).replace("\n", "\n  ")
            click.echo(f"Error: {msg}", err=True)
            sys.exit(1)
        except (KeyError, ValueError, RuntimeError, ImportError) as e:
            # ImportError: ZenML could not import a flavor (its message is one paragraph).
            msg = str(e).replace("\n", " ")
            click.echo(f"Error: {type(e).__name__}: {msg}", err=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


# Where a command's result goes: the stdout the command started with (see _stdout_for_results).
_RESULTS_KEY = "zmd.results"


@contextlib.contextmanager
def _stdout_for_results(ctx: click.Context) -> Iterator[None]:
    """While a command runs, ``sys.stdout`` is stderr, and only the command's result (``_echo``)
    is written to the real stdout.

    What ZenML or a backend's SDK logs or prints goes to stderr: ZenML's console handler
    writes log records to the stdout it finds when ZenML is imported (during the command), and
    an SDK's warning (databricks-sdk's host metadata probe, say) before `get-url`'s URL would
    break `curl "$(zmd models get-url ...)"` and `-o json`.

    Args:
        ctx: the command's context, which keeps the real stdout for ``_echo``.

    Yields:
        Nothing.
    """
    real = sys.stdout
    ctx.meta[_RESULTS_KEY] = real
    sys.stdout = sys.stderr
    try:
        yield
    finally:
        # Only if still ours: an in-process caller (click's test runner) swaps streams too.
        if sys.stdout is sys.stderr:
            sys.stdout = real


def _results() -> Any:
    """The stream for a command's result: the real stdout (see ``_stdout_for_results``)."""
    ctx = click.get_current_context(silent=True)
    return ctx.meta.get(_RESULTS_KEY, sys.stdout) if ctx is not None else sys.stdout


def _echo(message: str = "", nl: bool = True) -> None:
    """Writes (part of) a command's result to stdout.

    Args:
        message: the text.
        nl: end it with a newline.
    """
    click.echo(message, file=_results(), nl=nl)


@click.group()
@click.version_option(package_name="zenml-model-deployers")
@click.pass_context
def main(ctx: click.Context) -> None:
    """zenml-model-deployers: deploy models from ZenML pipelines and manage the deployments."""
    ctx.with_resource(_stdout_for_results(ctx))


# --------------------------------------------------------------------------- flavors
@main.group()
def flavors() -> None:
    """Register and list the zmd-* model deployer flavors."""


@flavors.command("register")
@_friendly_errors
def flavors_register() -> None:
    """Registers every zmd-* flavor in the active ZenML store (idempotent)."""
    from zenml_model_deployers.flavors import (
        DEPLOYER_FLAVOR_SOURCES,
        FLAVOR_SOURCES,
        next_steps,
        register_flavors,
    )

    added = register_flavors()
    for name in [*FLAVOR_SOURCES, *DEPLOYER_FLAVOR_SOURCES]:
        state = "registered" if name in added else "already registered"
        _echo(f"{name}: {state}")
    # The right command for this config: ZenML refuses to modify the `default` stack.
    _echo(f"Next: {next_steps()}")


@flavors.command("list")
def flavors_list() -> None:
    """Lists the flavors this package provides."""
    from zenml_model_deployers.flavors import DEPLOYER_FLAVOR_SOURCES, FLAVOR_SOURCES

    for name, source in {**FLAVOR_SOURCES, **DEPLOYER_FLAVOR_SOURCES}.items():
        _echo(f"{name}\t{source}")


# --------------------------------------------------------------------------- models
@main.group()
def models() -> None:
    """Manage deployments (by service id, id prefix or deployment name)."""


def _deployer_for(service: DeploymentService) -> Any:
    from zenml_model_deployers.flavors import get_deployer

    return get_deployer(service.FLAVOR)


def _row(s: DeploymentService) -> dict[str, Any]:
    from zenml_model_deployers.states import state_word

    return {
        "id": str(s.uuid),
        "name": s.deployment_name,
        "flavor": s.FLAVOR,
        "state": state_word(s.status.state),
        "model": s.config.model_name,
        "revision": s.status.revision,
        "url": s.prediction_url,
        "restarts": getattr(s.status, "restarts", 0),
        "pipeline": s.config.pipeline_name,
        "step": s.config.pipeline_step_name,
    }


@models.command("list")
@click.option("--flavor", help="only this flavor (e.g. zmd-mlflow)")
@click.option("--model", "model_name", help="only deployments of this model name")
@click.option("--pipeline", help="only deployments made by this pipeline")
@click.option("--running", is_flag=True, help="only running deployments")
@click.option(
    "--stats",
    is_flag=True,
    help="per revision: req/s, error rate, p50/p95 latency over the last 5 minutes",
)
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@_friendly_errors
def models_list(
    flavor: str | None,
    model_name: str | None,
    pipeline: str | None,
    running: bool,
    stats: bool,
    output: str,
) -> None:
    """Lists deployments with their live state and URL."""
    from zenml_model_deployers.local.fastlist import list_local_rows

    fast = list_local_rows(flavor, stats=stats)
    if fast is not None:
        rows = fast
    else:
        rows = []
        for s in all_services(flavor):
            rows.append({**_row(s), **({"stats": _stats(s)} if stats else {})})
    if model_name:
        rows = [r for r in rows if r["model"] == model_name]
    if pipeline:
        rows = [r for r in rows if r["pipeline"] == pipeline]
    if running:
        rows = [r for r in rows if r["state"] == "running"]
    if output == "json":
        _echo(json.dumps(rows, indent=2))
        return
    if not rows:
        _echo("No deployments. Deploy one with a deploy step (see `make demo`).")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    cols = ["ID", "NAME", "FLAVOR", "STATE", "MODEL", "REV", "URL"]
    if stats:
        cols += ["REVISION", "REQ/S", "ERRORS", "P50 MS", "P95 MS"]
    for col in cols:
        table.add_column(col, overflow="fold")
    for r in rows:
        cells = [
            r["id"][:8],
            r["name"],
            r["flavor"],
            r["state"],
            r["model"],
            str(r["revision"]),
            r["url"] or "-",
        ]
        if not stats:
            table.add_row(*cells)
            continue
        per_rev = r.get("stats")
        if not isinstance(per_rev, dict) or not per_rev:
            table.add_row(*cells, str(per_rev) if isinstance(per_rev, str) else "-", "", "", "", "")
            continue
        for i, (rev, m) in enumerate(per_rev.items()):
            table.add_row(
                *(cells if i == 0 else [""] * len(cells)),
                rev[:12],
                _num(m.get("req_per_s")),
                "-" if m.get("error_rate") is None else f"{100 * m['error_rate']:.2f}%",
                _num(m.get("p50_ms")),
                _num(m.get("p95_ms")),
            )
    Console(width=240, file=_results()).print(table)


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:g}"


@models.command("describe")
@click.argument("ref")
@click.option("--flavor", help="disambiguate a name used by several flavors")
@click.option(
    "--stats",
    is_flag=True,
    help="add per revision: req/s, error rate, p50/p95 latency over the last 5 minutes",
)
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@_friendly_errors
def models_describe(ref: str, flavor: str | None, stats: bool, output: str) -> None:
    """Shows everything about one deployment."""
    from zenml_model_deployers.local.fastlist import describe_row, row_stats

    row = fast_row(ref, flavor)
    info = describe_row(row) if row is not None else None
    if info is not None and stats:
        assert row is not None
        info["stats"] = row_stats(row)
    if info is None:
        s = resolve_deployment(ref, flavor)
        info = _describe(s)
        if stats:
            info["stats"] = _stats(s)
    if output == "json":
        _echo(json.dumps(info, indent=2, default=str))
        return
    width = max(len(k) for k in info)
    for k, v in info.items():
        if isinstance(v, dict):
            v = json.dumps(v, default=str)
        _echo(f"{k.upper():<{width}}  {'' if v is None else v}".rstrip())


def _describe(s: DeploymentService) -> dict[str, Any]:
    info: dict[str, Any] = {
        **s.describe(),
        "status_message": s.status.last_error,
        "deployed_at": s.status.deployed_at,
        "pipeline": s.config.pipeline_name,
        "step": s.config.pipeline_step_name,
        "run": s.config.run_name,
        "config": s.config.serving_fields(),
    }
    if hasattr(s.status, "log_path"):
        info["log_path"] = s.status.log_path
    if hasattr(s.status, "restarts"):
        info["restarts"] = s.status.restarts
    if hasattr(s, "metrics_url"):
        info["metrics_url"] = s.metrics_url if s.status.state == "active" else None
    return info


def _stats(s: DeploymentService) -> dict[str, Any] | str | None:
    """Per revision: req/s, error rate, p50/p95 over the last minutes where the backend keeps
    a history (local relay), else its cumulative counts; a sentence where it reports none."""
    from zenml_model_deployers.errors import ConfigurationError, DeploymentError
    from zenml_model_deployers.local.fastlist import STATS_WINDOW

    if s.status.state != "active":
        return None
    try:
        metrics = s.read_revision_metrics(window=STATS_WINDOW)
    except ConfigurationError as e:
        return f"{s.FLAVOR} reports no request metrics" + (f" ({e.hint})" if e.hint else "")
    except DeploymentError as e:
        return f"unavailable: {e}"
    return {rev: m.summary() for rev, m in metrics.items()}


@models.command("get-url")
@click.argument("ref")
@click.option("--flavor")
@_friendly_errors
def models_get_url(ref: str, flavor: str | None) -> None:
    """Prints the deployment's prediction URL (stable across revisions)."""
    row = fast_row(ref, flavor)
    if row is not None:
        name, url = row["name"], row["url"]
    else:
        s = resolve_deployment(ref, flavor)
        name, url = s.deployment_name, s.prediction_url
    if not url:
        from zenml_model_deployers.errors import DeploymentError

        raise DeploymentError(f"Deployment '{name}' has no URL.")
    _echo(url)


@models.command("logs")
@click.argument("ref")
@click.option("--flavor")
@click.option("--follow", "-f", is_flag=True, help="keep printing new lines")
@click.option("--tail", "-t", type=int, default=None, help="only the last N lines")
@_friendly_errors
def models_logs(ref: str, flavor: str | None, follow: bool, tail: int | None) -> None:
    """Prints the serving process's logs."""
    lines = _fast_logs(ref, flavor, follow, tail)
    if lines is None:
        lines = resolve_deployment(ref, flavor).get_logs(follow=follow, tail=tail)
    try:
        for line in lines:
            _echo(line)
    except KeyboardInterrupt:
        pass


def _fast_logs(
    ref: str, flavor: str | None, follow: bool, tail: int | None
) -> Iterator[str] | None:
    """The log lines read without ZenML, redacted as the ZenML path redacts them, or None."""
    from pathlib import Path

    from zenml_model_deployers import secrets
    from zenml_model_deployers.local.fastlist import log_redactions
    from zenml_model_deployers.local.state import live_process, log_lines

    row = fast_row(ref, flavor)
    if row is None:
        return None
    redactions = log_redactions(row)
    path = row["status"].get("log_path")
    if redactions is None:
        return None
    if not path:
        return iter(())
    for value in redactions:
        secrets.remember_secret_value(value)
    server = row["status"].get("server")
    return log_lines(
        Path(path), tail, follow, lambda: live_process(server) is not None, secrets.redact
    )


@models.command("start")
@click.argument("ref", required=False)
@click.option("--flavor")
@click.option(
    "--all",
    "start_all",
    is_flag=True,
    help="start every deployment recorded as running that does not run (e.g. after a reboot)",
)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=None,
    help="move the deployment to this port (its recorded port is taken)",
)
@click.option("--timeout", type=float, default=None, help="seconds to wait until it serves")
@_friendly_errors
def models_start(
    ref: str | None, flavor: str | None, start_all: bool, port: int | None, timeout: float | None
) -> None:
    """Starts a stopped deployment on its recorded URL (or on --port), or all with --all."""
    if start_all == (ref is not None):
        raise click.UsageError("give a deployment (REF) or --all, not both.")
    if start_all:
        if port is not None:
            raise click.UsageError("--port moves one deployment: give REF, not --all.")
        _start_all(flavor, timeout)
        return
    assert ref is not None
    # Resolved without ZenML where it can be: a reference that matches nothing fails at once
    # (with --port too), and a stopped local deployment starts without ZenML
    # (local/faststart.py).
    row = fast_row(ref, flavor)
    if row is not None and port is None:
        from zenml_model_deployers.local import faststart

        url = faststart.start(row, timeout)
        if url is not None:
            _echo(f"Deployment '{row['name']}' serves at {url}")
            return
    s = resolve_deployment(ref, flavor)
    _deployer_for(s).start(s, timeout, port=port)
    _echo(f"Deployment '{s.deployment_name}' serves at {s.prediction_url}")


def _start_all(flavor: str | None, timeout: float | None) -> None:
    """Starts, one after the other, every deployment whose recorded admin state is active but
    which does not run; one line per deployment; exit 1 if any could not start."""
    from zenml.enums import ServiceState

    from zenml_model_deployers.errors import DeploymentError

    failed = 0
    wanted = [s for s in all_services(flavor) if s.admin_state == ServiceState.ACTIVE]
    if not wanted:
        _echo("No deployment is recorded as running.")
    for s in wanted:
        if s.status.state == ServiceState.ACTIVE:
            _echo(f"{s.deployment_name}: already serves at {s.prediction_url}")
            continue
        try:
            _deployer_for(s).start(s, timeout)
        except DeploymentError as e:
            failed += 1
            msg = str(e).replace("\n", "\n  ")
            click.echo(f"{s.deployment_name}: FAILED: {msg}", err=True)
            continue
        _echo(f"{s.deployment_name}: serves at {s.prediction_url}")
    if failed:
        click.echo(f"Error: {failed} deployment(s) did not start (see above).", err=True)
        sys.exit(1)


@models.command("stop")
@click.argument("ref")
@click.option("--flavor")
@_friendly_errors
def models_stop(ref: str, flavor: str | None) -> None:
    """Stops a deployment (reversible with `start`)."""
    s = resolve_deployment(ref, flavor)
    _deployer_for(s).stop(s)
    _echo(f"Deployment '{s.deployment_name}' stopped.")


@models.command("delete")
@click.argument("ref")
@click.option("--flavor")
@click.option("-y", "--yes", is_flag=True, help="do not ask for confirmation")
@_friendly_errors
def models_delete(ref: str, flavor: str | None, yes: bool) -> None:
    """Deletes a deployment from its backend and the service store.

    Idempotent, so that clean-up scripts never fail: deleting a deployment that does not
    exist (any more) says so and exits 0.
    """
    from zenml_model_deployers.errors import AmbiguousReferenceError, DeploymentNotFoundError

    try:
        s = resolve_deployment(ref, flavor)
    except AmbiguousReferenceError:
        raise
    except DeploymentNotFoundError:
        _echo(f"No deployment matches '{ref}': nothing to delete.")
        return
    if not yes and not click.confirm(
        f"Delete deployment '{s.deployment_name}' ({s.FLAVOR}, {s.prediction_url})?"
    ):
        _echo("Aborted.")
        sys.exit(1)
    _deployer_for(s).delete(s)
    _echo(f"Deployment '{s.deployment_name}' deleted.")


@models.command("promote")
@click.argument("ref")
@click.option("--flavor")
@click.option("--timeout", type=float, default=None, help="seconds to wait until it serves")
@_friendly_errors
def models_promote(ref: str, flavor: str | None, timeout: float | None) -> None:
    """Finishes a canary: the candidate revision takes all requests."""
    s = resolve_deployment(ref, flavor)
    _deployer_for(s).promote(s, timeout)
    _echo(
        f"Deployment '{s.deployment_name}' promoted: revision {s.status.config_hash} serves "
        f"all requests at {s.prediction_url}"
    )


@models.command("rollback")
@click.argument("ref")
@click.option("--flavor")
@click.option("--timeout", type=float, default=None, help="seconds to wait until it serves")
@_friendly_errors
def models_rollback(ref: str, flavor: str | None, timeout: float | None) -> None:
    """Ends a canary: the stable revision takes all requests again."""
    s = resolve_deployment(ref, flavor)
    _deployer_for(s).rollback(s, timeout)
    _echo(
        f"Deployment '{s.deployment_name}' rolled back: revision {s.status.config_hash} serves "
        f"all requests at {s.prediction_url}"
    )


@models.command("recreate")
@click.option("--run", "run", required=True, help="pipeline run name, id or id prefix")
@click.option("--step", "step", default=None, help="the deploy step (if the run has several)")
@click.option("--timeout", type=float, default=None)
@_friendly_errors
def models_recreate(run: str, step: str | None, timeout: float | None) -> None:
    """Deploys again the exact serving conditions a past run recorded."""
    from zenml_model_deployers.recreate import load_run_service, recreate

    recorded = load_run_service(run, step)
    svc = recreate(recorded, timeout=timeout)
    _echo(
        f"Deployment '{svc.deployment_name}' serves revision {svc.status.config_hash} "
        f"at {svc.prediction_url}"
    )


if __name__ == "__main__":
    main()
