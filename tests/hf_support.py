"""Fixtures shared by the `zmd-huggingface` tests: the offline double, the token secret, the stack.

Import the fixtures by name into a test module (``from hf_support import hf_double, ...``).
They are module-scoped: each module gets its own double (a server start costs milliseconds);
the ZenML secret and stack are created once per session and reused.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from zenml_model_deployers.testing.hf_double import HFEndpointsDouble

SECRET = "hf_zmd_test"
TOKEN_REF = "{{" + SECRET + ".token}}"
NAMESPACE = "zmd-test"
STACK = "zmd-test-hf"
COMPONENT = "zmd-test-huggingface"


def planted_token() -> str:
    """The Hugging Face token the tests plant in a ZenML secret (created on first use).

    Returns:
        Its value (the double demands it; leak tests grep for it).
    """
    from zenml.client import Client

    client = Client()
    try:
        return str(client.get_secret(SECRET).secret_values["token"])
    except KeyError:
        value = f"hf_planted_{uuid.uuid4().hex}"
        client.create_secret(name=SECRET, values={"token": value})
        return value


@pytest.fixture(scope="module")
def hf_double(zenml_env: Path) -> Iterator[HFEndpointsDouble]:
    """A running double that demands the planted token, with huggingface_hub pointed at it."""
    with (
        HFEndpointsDouble(
            namespace=NAMESPACE,
            token=planted_token(),
            pending_delay=0.1,
            init_delay=0.2,
            update_delay=0.3,
        ) as double,
        double.patch_hub(),
    ):
        yield double


@pytest.fixture(scope="module")
def hf_stack(zenml_env: Path) -> Iterator[str]:
    """A ZenML stack whose model deployer is `zmd-huggingface` (token by secret reference),
    active for the module; the previously active stack comes back afterwards."""
    from zenml.client import Client

    from zenml_model_deployers.flavors import ensure_deployer_stack

    planted_token()
    previous = Client().active_stack_model.name
    ensure_deployer_stack(
        STACK,
        COMPONENT,
        flavor="zmd-huggingface",
        configuration={"namespace": NAMESPACE, "token": TOKEN_REF, "default_timeout": 30},
    )
    yield STACK
    if Client().active_stack_model.name != previous:
        Client().activate_stack(previous)


@pytest.fixture(scope="module")
def hf_deployer(hf_stack: str, hf_double: HFEndpointsDouble) -> Any:
    """The active stack's `zmd-huggingface` deployer (talking to the double)."""
    from zenml_model_deployers.flavors import get_deployer

    return get_deployer("zmd-huggingface")
