"""What the docs say about what the code decides, asserted from the code, so neither drifts
alone: the steps that take `rollout` (docs/rollout.md), the flavors `zmd models promote|rollback`
work on (docs/cli.md), which flavors report metrics for a rollout (docs/architecture.md), each
step's parameter table (its signature), no secret value on a command line anywhere we show
one, and setup blocks that install regularly and never update the `default` stack."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path
from typing import Any

from zenml_model_deployers.service import DeploymentService

ROOT = Path(__file__).resolve().parent.parent
FLAVORS = ROOT / "src" / "zenml_model_deployers" / "flavors"


def _services() -> dict[str, type[DeploymentService]]:
    """flavor name -> its service class, from every flavors/<name>/service.py."""
    out: dict[str, type[DeploymentService]] = {}
    for d in sorted(p for p in FLAVORS.iterdir() if (p / "service.py").is_file()):
        module = importlib.import_module(f"zenml_model_deployers.flavors.{d.name}.service")
        for obj in vars(module).values():
            if (
                inspect.isclass(obj)
                and issubclass(obj, DeploymentService)
                and obj.__module__ == module.__name__
            ):
                out[obj.FLAVOR] = obj
    return out


def test_steps_that_take_rollout_are_the_ones_rollout_md_lists() -> None:
    import zenml_model_deployers.steps as steps

    takes = {
        name
        for name in steps.__all__
        if name.endswith("_step")
        and "rollout" in inspect.signature(getattr(steps, name).entrypoint).parameters
    }
    text = (ROOT / "docs" / "rollout.md").read_text()
    sentence = re.search(r"\(([^()]*)take the same\s+`rollout`\)", text)
    assert sentence, "docs/rollout.md no longer lists the steps that take `rollout`"
    assert set(re.findall(r"`(\w+_step)`", sentence.group(1))) == takes
    # kserve.md advertises policy="canary": its step takes `rollout`.
    assert "kserve_deployer_step" in takes


def test_promote_and_rollback_flavors_are_the_ones_cli_md_lists() -> None:
    splits = {flavor for flavor, cls in _services().items() if cls.SUPPORTS_TRAFFIC_SPLIT}
    text = (ROOT / "docs" / "cli.md").read_text()
    section = text.split("## `zmd models promote REF`", 1)[1].split("```", 1)[0]
    listed = section.split("):", 1)[0]
    assert set(re.findall(r"`(zmd-[a-z]+)`", listed)) == splits


def test_architecture_md_says_no_flavor_with_metrics_reports_none() -> None:
    """A flavor whose service reads revision metrics is not said to report none."""
    text = " ".join((ROOT / "docs" / "architecture.md").read_text().split())
    for flavor, cls in _services().items():
        if cls.read_revision_metrics is DeploymentService.read_revision_metrics:
            continue
        name = flavor.removeprefix("zmd-")
        for said in re.findall(r"[^.]*no metrics[^.]*\.", text):
            assert not re.search(
                rf"\b{name}\b[^,;]*(reports no metrics|cannot report)", said, re.I
            ), said
        assert not re.search(rf"cannot report metrics \({name} today\)", text, re.I)


def test_kind_messages_use_the_right_article() -> None:
    from zenml_model_deployers.kube.objects import a_or_an

    assert a_or_an("InferenceService") == "An InferenceService"
    assert a_or_an("Experiment") == "An Experiment"
    assert a_or_an("Secret") == "A Secret"


def _texts() -> dict[str, str]:
    """Every doc, example and source file a user reads commands in."""
    paths = [ROOT / "README.md", *(ROOT / "docs").rglob("*.md"), *(ROOT / "examples").rglob("*.py")]
    paths += [*(ROOT / "src").rglob("*.py"), *(ROOT / "steps").rglob("*.py")]
    return {str(p.relative_to(ROOT)): p.read_text() for p in paths}


def test_no_secret_value_on_a_command_line() -> None:
    """A `zenml secret create|update` shown anywhere takes its values at a prompt (`-i`) or
    from a file (`--values=@file`, `--key=@file`), never in argv (`ps`, shell history)."""
    found = [
        f"{path}: {m.group(0)}"
        for path, text in _texts().items()
        for m in re.finditer(
            r"zenml secret (?:create|update) \S+ [^`\n]*?--(?!values=@)\w+=(?!@)\S*", text
        )
    ]
    assert found == []


def test_setup_commands_install_regularly_on_a_stack_that_can_change() -> None:
    """The README warns against editable installs inside a ZenML source root, and a fresh
    config's active stack is `default`, which ZenML refuses to update: no doc's shell block
    shows `pip install -e` or `zenml stack update -d` (the active stack) as a setup step."""
    found = []
    for path, text in _texts().items():
        if not path.endswith(".md"):
            continue
        for block in re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL):
            for line in block.splitlines():
                command = line.split("  #")[0]
                if re.search(r"pip install -e\b|zenml stack update -d\b", command):
                    found.append(f"{path}: {line.strip()}")
        found += [f"{path}: `{m}`" for m in re.findall(r"`(pip install -e [^`]+)`", text)]
    assert found == []


def _step_tables() -> list[tuple[str, str, set[str]]]:
    """(doc, step, names in its parameter table) for every `## \\`<step>\\`` section of a doc
    that has a `| parameter |` table."""
    out = []
    for doc in sorted((ROOT / "docs").rglob("*.md")):
        text = doc.read_text()
        for m in re.finditer(r"^#{2,3} `(\w+_step)`\n(.*?)(?=^#{1,3} |\Z)", text, re.M | re.S):
            table = re.search(r"^\| parameter \|.*?\n((?:\|.*\n)+)", m.group(2), re.M)
            if table is None:
                continue
            names: set[str] = set()
            for row in table.group(1).splitlines()[1:]:
                names |= set(re.findall(r"`(\w+)`", row.split("|")[1]))
            out.append((str(doc.relative_to(ROOT)), m.group(1), names))
    return out


def test_each_steps_parameter_table_is_its_signature() -> None:
    """A step's parameter table in the docs names every parameter the step takes, and no
    other."""
    import zenml_model_deployers.steps as steps

    tables = _step_tables()
    assert {step for _, step, _ in tables} >= {"kserve_deployer_step", "seldon_deployer_step"}
    wrong = []
    for doc, step, names in tables:
        params = set(inspect.signature(getattr(steps, step).entrypoint).parameters)
        if names != params:
            wrong.append(
                f"{doc} {step}: missing {sorted(params - names)}, extra {sorted(names - params)}"
            )
    assert wrong == []


def test_kserve_step_hands_its_rollout_to_the_deploy(monkeypatch: Any) -> None:
    """kserve.md advertises policy="canary": the step passes `rollout` on, as the others do."""
    import zenml_model_deployers.steps.kserve as kserve_steps

    seen: dict[str, Any] = {}
    monkeypatch.setattr(kserve_steps, "deploy_with", lambda flavor, **kw: seen.update(kw))
    plan = {"steps": [10, 100], "interval": 30}
    kserve_steps.kserve_deployer_step.entrypoint(model_uri="gs://m", policy="canary", rollout=plan)
    assert seen["rollout"] == plan and seen["policy"] == "canary"
