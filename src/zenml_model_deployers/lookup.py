"""Finding deployments in ZenML's service store: by service id, id prefix or deployment name,
across every flavor, as `zmd` and its fast paths resolve them.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from zenml_model_deployers.service import DeploymentService


@contextlib.contextmanager
def cwd_source_root() -> Iterator[None]:
    """As in ZenML's own CLI: outside a ZenML repository the working directory is the source
    root (else it is this script's folder), so the classes of a custom flavor import from
    where the user registered it. Only while services are loaded: an in-process caller keeps
    its own source root."""
    import os

    from zenml.client import Client
    from zenml.utils import source_utils

    if Client.find_repository():
        yield
        return
    previous = source_utils._CUSTOM_SOURCE_ROOT
    source_utils.set_custom_source_root(os.getcwd())
    try:
        yield
    finally:
        source_utils.set_custom_source_root(previous)


def all_services(
    flavor: str | None = None,
    refresh: bool = True,
    unloadable: list[tuple[str, str, str, str]] | None = None,
) -> list[DeploymentService]:
    """Every zenml-model-deployers service in the active project (of ``flavor``), status read
    live. An unknown ``flavor`` (neither ours, nor registered, nor any deployment's) raises
    ``ConfigurationError`` naming the closest one. A service whose class cannot be imported
    here is skipped with a warning and, where ``unloadable`` is given, added to it as
    (id, deployment name, flavor, error)."""
    from zenml_model_deployers.service import service_from_response
    from zenml_model_deployers.store import service_rows

    out: list[DeploymentService] = []
    for resp in service_rows(flavor):
        # Ours by label, not by flavor name: users' custom flavors name themselves.
        if "zmd_deployment" not in (resp.labels or {}):
            continue
        try:
            with cwd_source_root():
                svc = service_from_response(resp)
        except (TypeError, ImportError, RuntimeError, ValueError) as e:
            print(f"Warning: skipping service {resp.id}: {e}", file=sys.stderr)
            if unloadable is not None:
                labels = resp.labels or {}
                unloadable.append(
                    (
                        str(resp.id),
                        labels["zmd_deployment"],
                        labels.get("zmd_flavor", "?"),
                        f"{type(e).__name__}: {e}",
                    )
                )
            continue
        if refresh:
            svc.update_status()
        out.append(svc)
    if flavor and not out:
        # A typo lists nothing: say so rather than "No deployments".
        from zenml_model_deployers.flavors import registered_flavors, require_known_flavor

        require_known_flavor(flavor, registered_flavors())
    return out


T = TypeVar("T")


def pick(ref: str, items: list[T], key: Callable[[T], tuple[str, str, str]]) -> T:
    """The one item whose id or name is ``ref``, else whose id starts with it.

    Args:
        ref: service id, id prefix or deployment name.
        items: candidates.
        key: (id, deployment name, flavor) of an item.

    Returns:
        The item.
    """
    from zenml_model_deployers.errors import AmbiguousReferenceError, DeploymentNotFoundError

    exact = [x for x in items if ref in key(x)[:2]]
    matches = exact or [x for x in items if key(x)[0].startswith(ref)]
    if not matches:
        raise DeploymentNotFoundError(
            f"No deployment matches '{ref}'.", hint="see `zmd models list`."
        )
    if len(matches) > 1:
        names = ", ".join(f"{key(x)[1]} ({key(x)[2]}, {key(x)[0][:8]})" for x in matches)
        raise AmbiguousReferenceError(
            f"'{ref}' matches several deployments: {names}.",
            hint="give a longer id prefix or --flavor.",
        )
    return matches[0]


def resolve_deployment(ref: str, flavor: str | None = None) -> DeploymentService:
    """A deployment by service id, id prefix, or deployment name.

    One that exists but whose service class cannot be imported here (a custom flavor's module
    off the path) is an error saying so, never "no deployment matches": a clean-up script
    must not take it for deleted.
    """
    from zenml_model_deployers.errors import ConfigurationError, DeploymentNotFoundError

    unloadable: list[tuple[str, str, str, str]] = []
    services = all_services(flavor, unloadable=unloadable)
    try:
        return pick(ref, services, lambda s: (str(s.uuid), s.deployment_name, s.FLAVOR))
    except DeploymentNotFoundError:
        if not unloadable:
            raise
        try:
            sid, name, its_flavor, error = pick(ref, unloadable, lambda u: (u[0], u[1], u[2]))
        except DeploymentNotFoundError:
            pass
        else:
            raise ConfigurationError(
                f"Deployment '{name}' ({its_flavor}, {sid[:8]}) exists, but its service class "
                f"cannot be imported here ({error}).",
                deployment_name=name,
                hint="run zmd from the folder that holds the flavor's module (where you "
                "registered the flavor), or add that folder to PYTHONPATH.",
            ) from None
        raise


def fast_row(ref: str, flavor: str | None) -> dict[str, Any] | None:
    """The deployment's row read without ZenML (see local/fastlist.py), or None: take ZenML's
    path. Raises like ``resolve_deployment`` when nothing or several match: both see the same rows."""
    from zenml_model_deployers.local.fastlist import live_row, row_refs

    # Resolved among every row (a remote one's state is not needed to tell it apart).
    refs = row_refs(flavor)
    if refs is None:
        return None
    return live_row(pick(ref, refs, lambda r: (r["id"], r["name"], r["flavor"])))
