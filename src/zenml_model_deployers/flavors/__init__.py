"""The flavors, by name, and how to get a deployer for one.

Only names and import paths live here: importing this module imports no backend.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from zenml_model_deployers.deployer import BaseDeployer

FLAVOR_SOURCES: dict[str, str] = {
    "zmd-mlflow": "zenml_model_deployers.flavors.mlflow.flavor.MLflowDeployerFlavor",
    "zmd-bentoml": "zenml_model_deployers.flavors.bentoml.flavor.BentoMLDeployerFlavor",
    "zmd-huggingface": (
        "zenml_model_deployers.flavors.huggingface.flavor.HuggingFaceDeployerFlavor"
    ),
    "zmd-databricks": "zenml_model_deployers.flavors.databricks.flavor.DatabricksDeployerFlavor",
    "zmd-seldon": "zenml_model_deployers.flavors.seldon.flavor.SeldonDeployerFlavor",
    "zmd-kserve": "zenml_model_deployers.flavors.kserve.flavor.KServeDeployerFlavor",
    "zmd-vllm": "zenml_model_deployers.flavors.vllm.flavor.VLLMDeployerFlavor",
}

# ZenML Deployer flavors (pipeline deployments, ``zenml pipeline deploy``): not model deployers.
DEPLOYER_FLAVOR_SOURCES: dict[str, str] = {
    "zmd-local": "zenml_model_deployers.pipeline_deployer.flavor.ZmdLocalDeployerFlavor",
}

# Flavors that need no settings: lifecycle calls work without a registered component.
SETTINGLESS = ("zmd-mlflow", "zmd-bentoml", "zmd-vllm")


def require_known_flavor(flavor: str, registered: Iterable[str] = ()) -> None:
    """Refuses a flavor name that is neither one of ours nor one registered, naming the
    closest one (a typo such as ``zmd-mlfow``) and all that are known.

    Args:
        flavor: the name given.
        registered: other names that are known: the custom model-deployer flavors registered
            in the user's ZenML store (a user's own flavor such as ``litserve``).

    Raises:
        ConfigurationError: the name is unknown.
    """
    import difflib

    from zenml_model_deployers.errors import ConfigurationError

    known = list(dict.fromkeys([*FLAVOR_SOURCES, *sorted(registered)]))
    if flavor in known:
        return
    close = difflib.get_close_matches(flavor, known, n=1)
    guess = f"did you mean '{close[0]}'? The known" if close else "the known"
    raise ConfigurationError(
        f"Unknown model deployer flavor '{flavor}'.",
        hint=f"{guess} flavors are: {', '.join(known)}.",
    )


def registered_flavors() -> list[str]:
    """The custom model-deployer flavors registered in the active ZenML store (ours and users'
    own; ZenML's built-in ones, which zenml-model-deployers does not manage, are left out).

    Returns:
        Their names.
    """
    from zenml.client import Client
    from zenml.enums import StackComponentType

    found = Client().list_flavors(type=StackComponentType.MODEL_DEPLOYER, size=1000).items
    return [f.name for f in found if f.is_custom]


def register_flavors() -> list[str]:
    """Registers every flavor in the active ZenML store (idempotent): the model-deployer
    flavors and the Deployer flavor ``zmd-local``.

    Returns:
        The names newly registered.
    """
    from zenml.client import Client
    from zenml.enums import StackComponentType

    client = Client()
    added = []
    for kind, sources in (
        (StackComponentType.MODEL_DEPLOYER, FLAVOR_SOURCES),
        (StackComponentType.DEPLOYER, DEPLOYER_FLAVOR_SOURCES),
    ):
        existing = {f.name for f in client.list_flavors(type=kind, size=1000).items}
        for name, source in sources.items():
            if name not in existing:
                client.create_flavor(source=source, component_type=kind)
                added.append(name)
    return added


def ensure_deployer_stack(
    stack: str,
    component: str,
    flavor: str = "zmd-mlflow",
    configuration: dict[str, Any] | None = None,
    activate: bool = True,
) -> list[str]:
    """Makes sure a model deployer component and a stack using it exist (idempotent).

    The flavors are registered, the component of `flavor` is created if missing, and the stack
    (the active stack's orchestrator and artifact store + that model deployer) if missing.

    Args:
        stack: the stack's name.
        component: the model deployer component's name.
        flavor: its flavor.
        configuration: its settings, when it is created.
        activate: make the stack active.

    Returns:
        What was created, as human-readable lines (empty if everything existed).
    """
    from zenml.client import Client
    from zenml.enums import StackComponentType

    client = Client()
    created = [f"flavor {name}" for name in register_flavors()]
    existing = client.list_stack_components(
        type=StackComponentType.MODEL_DEPLOYER, name=component
    ).items
    if not existing:
        client.create_stack_component(
            name=component,
            flavor=flavor,
            component_type=StackComponentType.MODEL_DEPLOYER,
            configuration=configuration or {},
        )
        created.append(f"model deployer {component} ({flavor})")
    try:
        # Exact names only: ZenML matches name prefixes by default, and "prod" must not find
        # (and activate) "prod-gpu".
        stack_id = client.get_stack(stack, allow_name_prefix_match=False, hydrate=False).id
    except KeyError:
        current = client.active_stack_model.components
        stack_id = client.create_stack(
            name=stack,
            components={
                StackComponentType.ORCHESTRATOR: str(
                    current[StackComponentType.ORCHESTRATOR][0].id
                ),
                StackComponentType.ARTIFACT_STORE: str(
                    current[StackComponentType.ARTIFACT_STORE][0].id
                ),
                StackComponentType.MODEL_DEPLOYER: component,
            },
        ).id
        created.append(f"stack {stack}")
    if activate and client.active_stack_model.id != stack_id:
        client.activate_stack(stack_id)
    return created


@contextlib.contextmanager
def keep_active_stack() -> Iterator[None]:
    """Inside the block, stacks may be activated (:func:`ensure_deployer_stack`); when it ends,
    also by an exception or Ctrl-C, the stack that was active before is active again.

    For scripts (the examples): they leave the user's active stack as they found it. ZenML loads
    the active stack, importing its flavors, for most of its commands: a stack left active whose
    custom flavor imports from one folder only would break them everywhere else.

    Yields:
        Nothing.
    """
    from zenml.client import Client

    previous = Client().active_stack_model.id
    try:
        yield
    finally:
        if Client().active_stack_model.id != previous:
            Client().activate_stack(previous)


def stack_command(component: str, new_stack: str = "zmd-stack") -> str:
    """The ZenML command that puts model deployer `component` on the active stack's place.

    ZenML refuses to modify the `default` stack, which is the active stack of a fresh config:
    then the command registers (and activates) a new stack with the active stack's
    orchestrator and artifact store; otherwise it updates the active stack.

    Args:
        component: the model deployer component's name.
        new_stack: the name of the stack to register when the active one is `default`.

    Returns:
        A shell command line.
    """
    import shlex

    from zenml.client import Client
    from zenml.constants import DEFAULT_STACK_AND_COMPONENT_NAME
    from zenml.enums import StackComponentType

    client = Client()
    active = client.active_stack_model
    q = shlex.quote
    if active.name != DEFAULT_STACK_AND_COMPONENT_NAME:
        return f"zenml stack update {q(active.name)} -d {q(component)}"
    taken = {st.name for st in client.list_stacks(size=1000).items}
    name, n = new_stack, 2
    while name in taken:
        name, n = f"{new_stack}-{n}", n + 1
    comps = active.components
    orch = comps[StackComponentType.ORCHESTRATOR][0].name
    store = comps[StackComponentType.ARTIFACT_STORE][0].name
    return f"zenml stack register {q(name)} -o {q(orch)} -a {q(store)} -d {q(component)} --set"


def next_steps(flavor: str = "zmd-mlflow", component: str = "local") -> str:
    """What to run so that the active stack deploys with a `flavor` model deployer.

    Uses a registered component of that flavor if there is one (else registers `component`)
    and says whether to update the active stack or register a new one (see
    :func:`stack_command`). Every command works on a fresh ZenML config.

    Args:
        flavor: the flavor to deploy with.
        component: the component's name, if one has to be registered.

    Returns:
        A sentence or a command line.
    """
    import shlex

    from zenml.client import Client
    from zenml.enums import StackComponentType

    client = Client()
    current = client.active_stack_model.components.get(StackComponentType.MODEL_DEPLOYER)
    if current and current[0].flavor_name in FLAVOR_SOURCES:
        return (
            f"the active stack '{client.active_stack_model.name}' deploys with "
            f"'{current[0].name}' ({current[0].flavor_name}): add a deploy step to a pipeline."
        )
    existing = client.list_stack_components(
        type=StackComponentType.MODEL_DEPLOYER, flavor=flavor, size=1
    ).items
    if existing:
        return stack_command(existing[0].name)
    register = f"zenml model-deployer register {shlex.quote(component)} --flavor={flavor}"
    return f"{register} && {stack_command(component)}"


def get_deployer(flavor: str | None = None) -> BaseDeployer:
    """The deployer to act with: the active stack's, or a registered component of `flavor`.

    Args:
        flavor: a `zmd-*` flavor name; None for the active stack's model deployer.

    Returns:
        The deployer.

    Raises:
        ConfigurationError: `flavor` is no known flavor (the closest one is named).
        DeploymentError: no such model deployer is registered.
    """
    from zenml.client import Client
    from zenml.enums import StackComponentType
    from zenml.stack.stack_component import StackComponent

    from zenml_model_deployers.deployer import BaseDeployer
    from zenml_model_deployers.errors import DeploymentError

    client = Client()
    # The active stack is loaded (every component's flavor imported) only when its model
    # deployer is the one asked for: a deployment of another flavor must not depend on a
    # custom flavor that imports only from its own folder.
    current = client.active_stack_model.components.get(StackComponentType.MODEL_DEPLOYER)
    if current and (flavor is None or current[0].flavor_name == flavor):
        active = _active_model_deployer(client)
        if isinstance(active, BaseDeployer):
            return active
    if flavor is None:
        raise DeploymentError(
            "The active stack has no zenml-model-deployers model deployer.",
            hint=f"`zmd flavors register && {next_steps()}`",
        )
    if flavor not in FLAVOR_SOURCES:
        require_known_flavor(flavor, registered_flavors())
    comps = client.list_stack_components(
        type=StackComponentType.MODEL_DEPLOYER, flavor=flavor, size=1, hydrate=True
    ).items
    if not comps:
        if flavor in SETTINGLESS:
            return _default_deployer(flavor)
        raise DeploymentError(
            f"No model deployer of flavor {flavor} is registered.",
            hint=f"`zenml model-deployer register <name> --flavor={flavor} ...`.",
        )
    comp = StackComponent.from_model(comps[0])
    assert isinstance(comp, BaseDeployer)
    return comp


def _active_model_deployer(client: Any) -> Any:
    """The active stack's model deployer, loaded by ZenML (which imports every flavor of the
    stack's components).

    Args:
        client: ZenML's client.

    Returns:
        The model deployer, or None.

    Raises:
        ConfigurationError: a flavor of the active stack cannot be imported here (ZenML's
            error, one line, with what to do).
    """
    import re

    from zenml_model_deployers.errors import ConfigurationError

    try:
        return client.active_stack.model_deployer
    except ImportError as e:
        # ZenML: "Couldn't import custom flavor NAME: CAUSE. Make sure ..." (one paragraph).
        named = re.match(r"Couldn't import (?:custom )?flavor (\S+?): ", str(e))
        cause: BaseException = e
        while cause.__cause__ is not None:  # the root: "No module named 'x'"
            cause = cause.__cause__
        what = f"uses flavor '{named[1]}' whose module" if named else "has a flavor that"
        raise ConfigurationError(
            f"The active stack '{client.active_stack_model.name}' {what} cannot be imported "
            f"here ({str(cause).strip().splitlines()[0]}).",
            hint="run from the folder that holds the flavor's module (or put that folder on "
            "PYTHONPATH), or make another stack active: `zenml stack set <stack>`.",
        ) from e


def _default_deployer(flavor: str) -> BaseDeployer:
    """An unregistered deployer of a flavor that needs no settings, for lifecycle calls."""
    import importlib
    from datetime import UTC, datetime
    from uuid import uuid4

    from zenml.enums import StackComponentType

    module, _, cls = FLAVOR_SOURCES[flavor].rpartition(".")
    flavor_obj = getattr(importlib.import_module(module), cls)()
    now = datetime.now(UTC)
    deployer: BaseDeployer = flavor_obj.implementation_class(
        name=f"{flavor}-default",
        id=uuid4(),
        config=flavor_obj.config_class(),
        flavor=flavor,
        type=StackComponentType.MODEL_DEPLOYER,
        user=None,
        created=now,
        updated=now,
    )
    return deployer
