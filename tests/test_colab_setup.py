"""The notebooks' Colab set-up cell and launch badges (issue 20, item 2).

Colab cannot be reached from here: the set-up cell runs in a subprocess with a stand-in
`google.colab` package on PYTHONPATH and a sitecustomize that records, instead of running, every
command the cell starts (subprocess.run / check_call / call / Popen). Without the stand-in the
cell must do nothing and print nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import course_cells as CC  # noqa: E402  (tools/ is not a package)

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
URL = CC.repository_url()

STAND_IN = {
    "google/__init__.py": "",
    "google/colab/__init__.py": "",
    "google/colab/output.py": textwrap.dedent("""
        import json, os

        def enable_custom_widget_manager():
            with open(os.environ["COLAB_RECORD"], "a") as f:
                f.write(json.dumps({"widget_manager": True}) + "\\n")
    """),
}

# Records each command instead of running it. Popen too, so that nothing at all is started.
RECORDER = textwrap.dedent("""
    import json, os, subprocess

    def _record(args, *a, **kw):
        with open(os.environ["COLAB_RECORD"], "a") as f:
            f.write(json.dumps({"argv": [str(x) for x in args], "check": kw.get("check")}) + "\\n")
        return subprocess.CompletedProcess(args, 0, "", "")

    subprocess.run = _record
    subprocess.check_call = lambda *a, **kw: _record(*a, **kw).returncode
    subprocess.call = lambda *a, **kw: _record(*a, **kw).returncode
    subprocess.Popen = lambda *a, **kw: (_ for _ in ()).throw(AssertionError(f"Popen{a}"))
""")


def run_cell(tmp_path: Path, source: str, colab: bool) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """Run the cell's source in a fresh Python, on "Colab" (the stand-in imported first, as Colab does) or not."""
    site = tmp_path / "site"
    for name, text in {**(STAND_IN if colab else {}), "sitecustomize.py": RECORDER}.items():
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_text(text)
    cell = tmp_path / "cell.py"
    cell.write_text(source)
    record = tmp_path / "record.jsonl"
    # Colab imports google.colab when the kernel starts; the cell only looks at sys.modules.
    prelude = "import google.colab\n" if colab else ""
    code = prelude + (f"exec(compile(open({str(cell)!r}).read(), 'cell', 'exec'))\n"
                      "import sys, json; print('SYSPATH' + json.dumps(sys.path))")
    env = {"PYTHONPATH": str(site), "COLAB_RECORD": str(record), "PATH": "/usr/bin:/bin", "PYTHONNOUSERSITE": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path)
    calls = [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []
    return out, calls


def setup_source() -> str:
    return CC.colab_setup_source(URL)


def test_on_colab_it_clones_installs_editable_and_enables_widgets(tmp_path):
    out, calls = run_cell(tmp_path, setup_source(), colab=True)
    assert out.returncode == 0, out.stderr
    home = f"/content/{CC.owner_repo(URL).split('/')[1]}"
    argvs = [c["argv"] for c in calls if "argv" in c]
    if not Path(home).is_dir():
        assert argvs[0] == ["git", "clone", "--depth", "1", URL, home], argvs
        argvs = argvs[1:]
    assert argvs == [[sys.executable, "-m", "pip", "install", "--quiet", "-e", home]], argvs
    assert all(c["check"] for c in calls if "argv" in c), "a failed install must stop the cell (check=True)"
    assert {"widget_manager": True} in calls, "Colab's custom widget manager must be enabled (ipywidgets)"
    sys_path = json.loads(out.stdout.split("SYSPATH", 1)[1])
    assert sys_path[0] == home, "the running kernel must find nstlib in the clone at once"


def test_on_colab_it_installs_nothing_the_notebooks_do_not_need(tmp_path):
    _, calls = run_cell(tmp_path, setup_source(), colab=True)
    pip = [c["argv"] for c in calls if "argv" in c and "pip" in c["argv"]]
    assert len(pip) == 1
    words = " ".join(pip[0])
    # torch and torchvision come with Colab; no extras (jupyterlab, tests) on a hosted kernel.
    for unwanted in ("torch", "[", "jupyterlab", "--upgrade", "-U"):
        assert unwanted not in words.replace(URL, ""), f"the Colab cell should not install {unwanted!r}: {words}"


def test_elsewhere_it_does_nothing_and_prints_nothing(tmp_path):
    out, calls = run_cell(tmp_path, setup_source(), colab=False)
    assert out.returncode == 0, out.stderr
    assert calls == [], f"outside Colab the cell must start nothing, it started {calls}"
    assert out.stdout.split("SYSPATH", 1)[0] == "" and out.stderr == "", "outside Colab the cell must print nothing"


def test_a_wheel_would_lack_the_data_folder_so_the_cell_installs_a_clone():
    """Why `git clone` + `pip install -e`, not `pip install git+URL`: nstlib reads data/ beside the package."""
    from nstlib import data

    assert data.DATA_DIR == ROOT / "data" and (data.DATA_DIR / "paintings.json").is_file()
    found = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert found["include"] == ["nstlib*"], "only nstlib is packaged: a wheel has no data/"
    assert '"-e", COURSE' in setup_source() and '"git", "clone"' in setup_source()


def test_the_repository_address_is_written_once():
    assert URL.startswith("https://github.com/")
    assert URL in setup_source()
    assert CC.colab_url(URL, "02_x.ipynb") == (
        f"https://colab.research.google.com/github/{CC.owner_repo(URL)}/blob/main/notebooks/02_x.ipynb")
    assert CC.binder_url(URL, "02_x.ipynb") == (
        f"https://mybinder.org/v2/gh/{CC.owner_repo(URL)}/main?labpath=notebooks%2F02_x.ipynb")
    readme = CC.readme_badges(URL)
    assert "colab-badge.svg" in readme and "badge_logo.svg" in readme


def test_another_address_changes_every_link(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n\n[project.urls]\nRepository = "https://github.com/a-b/c.d/"\n')
    url = CC.repository_url(tmp_path / "pyproject.toml")
    assert url == "https://github.com/a-b/c.d"
    nb = json.loads(NOTEBOOKS[0].read_text(encoding="utf-8"))
    new = CC.update_notebook(nb, NOTEBOOKS[0].name, url)
    text = json.dumps(new)
    assert "github/a-b/c.d/blob/main/notebooks/" in text and "gh/a-b/c.d/main" in text
    assert "https://github.com/a-b/c.d" in "".join(new["cells"][2]["source"])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_carries_the_current_badges_and_set_up_cell(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    cells = nb["cells"]
    assert "".join(cells[1]["source"]) == CC.badges_markdown(URL, path.name), \
        f"{path.name}: the badges must follow the title cell; run `make course-cells`"
    first_code = next(c for c in cells if c["cell_type"] == "code")
    assert "".join(first_code["source"]) == setup_source(), \
        f"{path.name}: the first code cell must be the current Colab set-up; run `make course-cells`"


def test_every_notebook_is_up_to_date():
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "course_cells.py"), "--check"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"{out.stdout}{out.stderr}"
