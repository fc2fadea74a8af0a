"""environment.yml (conda, Binder) agrees with pyproject.toml (issue 20, item 2).

Binder builds the repository with repo2docker from environment.yml. Its `pip: - -e .` is a
local requirement, so repo2docker copies the whole repository before installing the
environment, and the notebooks import the course's nstlib with its data/ folder. JupyterLab 4
with ipywidgets 8 needs no postBuild (the widget extension comes with the ipywidgets package).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML reads environment.yml")
version = pytest.importorskip("packaging.version", reason="packaging compares versions")
specifiers = pytest.importorskip("packaging.specifiers")
requirements = pytest.importorskip("packaging.requirements")

ROOT = Path(__file__).resolve().parent.parent
# pip name -> conda-forge name, where they differ.
CONDA_NAMES = {"torch": "pytorch", "matplotlib": "matplotlib-base"}
# The extras a notebook needs to run (the test extras are for CI, not for students).
NOTEBOOK_EXTRAS = ("notebooks",)

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
ENV = yaml.safe_load((ROOT / "environment.yml").read_text(encoding="utf-8"))


def conda_packages() -> dict[str, str]:
    """environment.yml's conda dependencies: name -> version constraint (conda syntax, may be "")."""
    out = {}
    for dep in ENV["dependencies"]:
        if isinstance(dep, str):
            name, constraint = re.match(r"^([A-Za-z0-9_.-]+)\s*(.*)$", dep).groups()
            out[name.lower()] = constraint.strip()
    return out


def pip_lines() -> list[str]:
    return [line for dep in ENV["dependencies"] if isinstance(dep, dict) for line in dep.get("pip", [])]


def lower_bound(constraint: str) -> version.Version | None:
    """The lowest version a constraint allows: ">=2.1" -> 2.1, "=3.11" / "3.11.*" -> 3.11, none -> None."""
    match = re.search(r"(?:>=|==|=|~=)?\s*(\d+(?:\.\d+)*)", constraint)
    if not constraint or not match or constraint.lstrip().startswith("<"):
        return None
    return version.Version(match.group(1))


def needed() -> list[requirements.Requirement]:
    """The runtime dependencies and the notebooks' extras, as pip requirements."""
    reqs = list(PROJECT["dependencies"])
    for extra in NOTEBOOK_EXTRAS:
        reqs += PROJECT["optional-dependencies"][extra]
    return [requirements.Requirement(r) for r in reqs]


@pytest.mark.parametrize("req", needed(), ids=lambda r: r.name)
def test_each_dependency_is_in_environment_yml_with_a_compatible_lower_bound(req):
    conda = conda_packages()
    name = CONDA_NAMES.get(req.name.lower(), req.name.lower())
    assert name in conda, f"{req.name} (conda: {name}) is missing from environment.yml"
    pip_low = min((version.Version(s.version) for s in req.specifier if s.operator in (">=", "==", "~=")), default=None)
    if pip_low is None:
        return
    conda_low = lower_bound(conda[name])
    assert conda_low is not None, f"environment.yml: {name} has no lower bound; pyproject.toml asks {req.specifier}"
    assert conda_low >= pip_low, (f"environment.yml allows {name} {conda[name]}, older than pyproject.toml's "
                                  f"{req.name}{req.specifier}: conda would install a version pip then replaces")


def test_every_package_listed_in_both_agrees():
    """The test tools listed in environment.yml too (pytest, nbval, ...) must not allow older versions."""
    conda = conda_packages()
    everything = [requirements.Requirement(r) for extra in PROJECT["optional-dependencies"].values() for r in extra
                  if not r.startswith(PROJECT["name"])]
    for req in everything:
        name = CONDA_NAMES.get(req.name.lower(), req.name.lower())
        low = min((version.Version(s.version) for s in req.specifier if s.operator == ">="), default=None)
        if name in conda and low is not None:
            conda_low = lower_bound(conda[name])
            assert conda_low is not None and conda_low >= low, f"environment.yml: {name} {conda[name]} vs {req}"


def test_python_version_satisfies_requires_python():
    conda = conda_packages()
    assert "python" in conda, "environment.yml must pin python (repo2docker reads an explicit version only)"
    pinned = re.fullmatch(r"=?=?(\d+\.\d+)(?:\.\*)?", conda["python"].strip())
    assert pinned, f"environment.yml: python must be one version, e.g. python=3.11; got {conda['python']!r}"
    assert version.Version(pinned.group(1)) in specifiers.SpecifierSet(PROJECT["requires-python"]), \
        f"python {pinned.group(1)} does not satisfy requires-python {PROJECT['requires-python']}"


def test_nstlib_is_installed_editable_from_the_repository():
    assert "pip" in conda_packages(), "environment.yml needs pip for its pip: section"
    assert "-e ." in [line.strip() for line in pip_lines()], \
        "environment.yml must install the course with `pip: - -e .` (nstlib reads data/ beside the package)"


def test_binder_needs_nothing_beside_environment_yml():
    """JupyterLab 4 and ipywidgets 8 bring their widget extension; a postBuild would only slow Binder down."""
    conda = conda_packages()
    assert lower_bound(conda["jupyterlab"]) >= version.Version("4.0")
    assert lower_bound(conda["ipywidgets"]) >= version.Version("8.0")
    for folder in (ROOT / "binder", ROOT / ".binder"):
        # repo2docker reads only that folder when it exists: the root environment.yml would be ignored.
        assert not folder.is_dir(), f"{folder.name}/ would hide environment.yml from Binder"
