"""docs/architecture.md's map of the package matches the tree: every module is named there,
and every module the map names exists (a newcomer reads the map before the code)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "zenml_model_deployers"


def _map() -> str:
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = doc.split("## Pieces", 1)[1].split("\n## ", 1)[0]
    return section.split("```", 2)[1]


def _flavor_table() -> str:
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    return doc.split("## One shape for every flavor", 1)[1].split("\n## ", 1)[0]


def test_every_module_is_on_the_map() -> None:
    text = _map()
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] == "flavors" and len(rel.parts) > 2:
            continue  # one shape for all flavors: checked against the table below
        if rel.name == "__init__.py":
            name = f"{rel.parent.name}/" if rel.parent.parts else None
        else:
            name = rel.name
        if name and name not in text:
            missing.append(str(rel))
    assert not missing, f"modules the map in docs/architecture.md does not name: {missing}"


def test_every_flavor_module_is_in_the_shape_table() -> None:
    table = _flavor_table()
    columns = [c.strip() for c in table.split("\n| module |", 1)[1].split("\n")[0].split("|")]
    flavors = [c for c in columns if c]
    folders = sorted(p.name for p in (PACKAGE / "flavors").iterdir() if (p / "flavor.py").exists())
    assert sorted(flavors[1:]) == folders  # first column: "holds"
    for folder in folders:
        for path in sorted((PACKAGE / "flavors" / folder).glob("*.py")):
            if path.name == "__init__.py":
                continue
            assert f"`{path.name}`" in table, f"flavors/{folder}/{path.name} is not in the table"


def test_every_module_the_map_names_exists() -> None:
    names = set(re.findall(r"\b([a-z_0-9]+\.py)\b", _map()))
    existing = {p.name for p in PACKAGE.rglob("*.py")}
    assert names <= existing, f"the map names modules that do not exist: {names - existing}"


def test_every_package_goes_into_the_wheel() -> None:
    """pyproject.toml lists the packages the wheel carries: a folder left off installs nowhere
    but an editable checkout (a new folder once failed only in tests/test_wheel_install.py)."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    listed = set(project["tool"]["setuptools"]["packages"])
    found = {
        ".".join(("zenml_model_deployers", *init.parent.relative_to(PACKAGE).parts))
        for init in PACKAGE.rglob("__init__.py")
    }
    assert found - listed == set(), (
        f"packages pyproject.toml leaves out of the wheel: {found - listed}"
    )
