"""`ensure_deployer_stack` finds and activates stacks by their exact name; `keep_active_stack`
puts the previously active one back."""

from __future__ import annotations

from pathlib import Path

from zenml.client import Client

from zenml_model_deployers.flavors import ensure_deployer_stack


def test_a_stack_whose_name_extends_the_wanted_one_is_not_taken_for_it(zenml_env: Path) -> None:
    client = Client()
    previous = client.active_stack_model.id
    try:
        ensure_deployer_stack("pfx-stack-longer", "pfx-deployer", activate=False)
        # ZenML matches name prefixes by default: "pfx-stack" would find "pfx-stack-longer".
        created = ensure_deployer_stack("pfx-stack", "pfx-deployer")
        assert "stack pfx-stack" in created
        assert client.active_stack_model.name == "pfx-stack"
        assert ensure_deployer_stack("pfx-stack", "pfx-deployer") == []
    finally:
        client.activate_stack(previous)


def test_keep_active_stack_puts_the_previous_stack_back_even_on_failure(
    zenml_env: Path,
) -> None:
    """What the examples rely on: the stack active before the block is active after it, also
    when the block raises."""
    import pytest

    from zenml_model_deployers.flavors import keep_active_stack

    client = Client()
    previous = client.active_stack_model.id
    with keep_active_stack():
        ensure_deployer_stack("kept-stack", "kept-deployer")
        assert client.active_stack_model.name == "kept-stack"
    assert client.active_stack_model.id == previous
    with pytest.raises(RuntimeError, match="planted"), keep_active_stack():
        ensure_deployer_stack("kept-stack", "kept-deployer")
        raise RuntimeError("planted failure")
    assert client.active_stack_model.id == previous
