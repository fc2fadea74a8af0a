"""The two README commands, CI and the conda environment stay consistent with each other."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONDA_NAMES = {"torch": "pytorch", "matplotlib": "matplotlib-base"}


def _names(requirements):
    return {re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0].strip().lower() for r in requirements}


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = [l.strip() for l in (ROOT / ".ci" / "run").read_text().splitlines() if l.strip() and not l.startswith("#")]
    assert "make test" in readme and "make lab" in readme
    assert ci[-1] == "make test", ci


def test_environment_yml_has_every_runtime_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = (ROOT / "environment.yml").read_text()
    listed = set(re.findall(r"^\s+- ([A-Za-z0-9_.-]+)", env, flags=re.M))
    for name in _names(project["dependencies"]):
        assert CONDA_NAMES.get(name, name) in listed, f"{name} is missing from environment.yml"
    assert re.search(r"^\s+- -e \.\s*$", env, flags=re.M), "environment.yml must install nstlib with pip -e ."


def test_ci_pins_the_torch_pair_and_the_package_stays_loose():
    pins = (ROOT / "constraints-ci.txt").read_text()
    assert re.search(r"^torch==\S+", pins, flags=re.M) and re.search(r"^torchvision==\S+", pins, flags=re.M)
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert not any("==" in d for d in deps), deps
