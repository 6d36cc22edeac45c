"""`ensure_deployer_stack`: finds and activates stacks by their exact name."""

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
