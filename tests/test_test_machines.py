"""tools/test_machines.py (`make test-machines`): claims read back, the table, the exit status, the rows.

No lecture run here: fake executed notebooks and JUnit files, built in the tests.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import test_machines as TM  # noqa: E402  (tools/ is not a package)

CLAIM_A = "relu1_1's maps still look like the photo (its pixels explain at least half of their variance)"
CLAIM_B = "deeper layers keep less of the exact pixels"


def stream(text: str | list[str], name: str = "stdout") -> dict:
    return {"output_type": "stream", "name": name, "text": text}


def code(*outputs: dict) -> dict:
    return {"cell_type": "code", "source": "", "metadata": {}, "execution_count": 1, "outputs": list(outputs)}


def notebook(*cells: dict) -> dict:
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": list(cells)}


def write_notebook(folder: Path, name: str, nb: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.ipynb").write_text(json.dumps(nb), encoding="utf-8")


# ------------------------------------------------------------------ claims

def test_parse_claim_reads_the_three_verdicts_and_nothing_else():
    assert TM.parse_claim(f"✓ {CLAIM_A} (measured: R² 0.81 (relu1_1))") == ("✓", CLAIM_A)
    assert TM.parse_claim(f"✗ {CLAIM_B} (measured: 1.2, 0.9)\n") == ("✗", CLAIM_B)
    assert TM.parse_claim(f"– {CLAIM_B} (not checked in smoke mode (tiny images); measured: 3)") == ("–", CLAIM_B)
    # A self-check's line, a list item, plain text: not claims.
    assert TM.parse_claim("✓ gram_matrix matches nstlib.losses.gram_matrix on 3 test inputs") is None
    assert TM.parse_claim("– a bullet (with parentheses)") is None
    assert TM.parse_claim("mode: cpu (set by NSTLIB_MODE)") is None
    assert TM.parse_claim("") is None


def test_claims_are_collected_from_stream_outputs_keyed_by_notebook(tmp_path):
    write_notebook(tmp_path, "01_tour", notebook(
        {"cell_type": "markdown", "source": f"✓ {CLAIM_B} (measured: 1)", "metadata": {}},  # not an output
        code(stream("mode: cpu\n"), stream([f"✓ {CLAIM_A} (measured: 0.8)\n", "done\n"])),
        code({"output_type": "execute_result", "data": {"text/plain": f"'✓ {CLAIM_B} (measured: 1)'"},
              "metadata": {}, "execution_count": 2}),
        code(stream(f"✗ {CLAIM_B} (measured: 1.3)\n")),
        code(),  # a cell that did not run: no outputs
    ))
    write_notebook(tmp_path, "02_content", notebook(code(stream(f"✓ {CLAIM_B} (measured: 2)\n"))))
    assert TM.collect_claims(tmp_path) == {("01_tour", CLAIM_A): "✓", ("01_tour", CLAIM_B): "✗",
                                           ("02_content", CLAIM_B): "✓"}
    assert TM.collect_claims(tmp_path / "absent") == {}


def test_a_claim_that_failed_once_in_a_notebook_counts_as_failed(tmp_path):
    write_notebook(tmp_path, "nb", notebook(code(stream(f"✗ {CLAIM_A} (measured: 1)\n")),
                                            code(stream(f"✓ {CLAIM_A} (measured: 2)\n"))))
    assert TM.collect_claims(tmp_path) == {("nb", CLAIM_A): "✗"}


def test_junit_outcomes(tmp_path):
    xml = tmp_path / "t.xml"
    xml.write_text("""<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase classname="tests.test_pretrained" name="test_ok" time="1"/>
<testcase classname="tests.test_pretrained" name="test_bad[x]" time="1"><failure message="no">x</failure></testcase>
<testcase classname="tests.test_style_strength" name="test_skip" time="0"><skipped message="no weights"/></testcase>
<testcase classname="tests.test_style_strength" name="test_teardown" time="0"/>
<testcase classname="tests.test_style_strength" name="test_teardown" time="0"><error message="boom"/></testcase>
</testsuite></testsuites>""", encoding="utf-8")
    outcomes = TM.junit_outcomes(xml)
    assert outcomes == {"tests.test_pretrained::test_ok": "passed", "tests.test_pretrained::test_bad[x]": "failed",
                        "tests.test_style_strength::test_skip": "skipped",
                        "tests.test_style_strength::test_teardown": "failed"}
    assert TM.count(outcomes) == {"passed": 1, "failed": 2, "skipped": 1}
    assert TM.count(None) == {}


# ------------------------------------------------------------------ the table and the exit status

def row(name: str, claims: dict, lectures_problem: str = "", tests: dict | None = None,
        tests_problem: str = "") -> TM.RowResult:
    return TM.RowResult(name, TM.ROWS[name], claims=claims,
                        lectures=TM.RunResult({"notebooks.nb::Cell 0": "passed"}, lectures_problem),
                        tests=TM.RunResult(tests if tests is not None else {}, tests_problem), seconds=75)


def table_line(table: str, text: str) -> list[str]:
    """The cells of the first table line that holds text ("| x |": the line that starts so)."""
    line = next(line for line in table.splitlines() if (line.startswith(text) if text.startswith("|") else text in line))
    return [cell.strip() for cell in line.strip().strip("|").split(" | ")]


def test_table_shows_held_failed_and_missing_per_row():
    long_claim = "x" * 100
    rows = [row("default", {("01_tour", CLAIM_A): "✓", ("01_tour", long_claim): "✓", ("02_c", CLAIM_B): "✓"},
                tests={"tests.test_pretrained::test_a": "passed", "tests.test_pretrained::test_b": "passed"}),
            row("bfloat16", {("01_tour", CLAIM_A): "✗", ("01_tour", long_claim): "✓"}, lectures_problem="exit status 1",
                tests={"tests.test_pretrained::test_a": "failed", "tests.test_pretrained::test_b": "passed"},
                tests_problem="exit status 1")]
    table = TM.render_table(rows, {"NSTLIB_THREADS": "1"})
    assert "**bfloat16** (NSTLIB_PRECISION=bfloat16)" in table and "NSTLIB_THREADS=1" in table
    assert table_line(table, "| notebook | claim |") == ["notebook", "claim", "default", "bfloat16"]
    assert table_line(table, "relu1_1's maps")[2:] == ["✓", "✗"]
    assert table_line(table, CLAIM_B) == ["02_c", CLAIM_B, "✓", "?"]  # the cell did not run in bfloat16
    abbreviated = table_line(table, "xxxx")[1]
    assert len(abbreviated) == TM.CLAIM_WIDTH and abbreviated.endswith("…")
    # Only the test that failed somewhere gets a line.
    assert table_line(table, "test_a") == ["test_pretrained.py::test_a", "✓", "✗"]
    assert "test_b" not in table
    assert table_line(table, "| default |")[1:] == ["1 / 0", "2 / 0", "1 min 15 s", "passed"]
    assert table_line(table, "| bfloat16 |")[1:] == ["1 / 0: exit status 1", "1 / 1: exit status 1", "1 min 15 s", "FAILED"]


def test_table_without_lectures_or_tests():
    r = TM.RowResult("avx2", TM.ROWS["avx2"], tests=TM.RunResult(None, "timed out after 1 h 00 min"))
    table = TM.render_table([r])
    assert "## Claims" not in table and "No test outcome came back." in table
    assert table_line(table, "| avx2 |")[1:3] == ["not run", "?: timed out after 1 h 00 min"]
    assert "ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2" in table


def test_exit_status_is_one_when_any_row_failed():
    ok = row("default", {})
    assert TM.exit_status([ok]) == 0
    assert TM.exit_status([ok, row("float32", {}, lectures_problem="exit status 1")]) == 1
    assert TM.exit_status([ok, row("threads1", {}, tests_problem="timed out after 60 min")]) == 1
    assert TM.exit_status([TM.RowResult("avx2", {})]) == 0  # nothing run, nothing failed


# ------------------------------------------------------------------ rows and commands

def test_rows_are_parsed_and_an_unknown_row_names_the_rows(capsys):
    assert TM.parse_rows("default, float32,default") == ["default", "float32"]
    assert TM.parse_rows(",".join(TM.ROWS)) == list(TM.ROWS)
    with pytest.raises(ValueError, match="unknown row 'fp16': the rows are default, float32, bfloat16, threads1, avx2"):
        TM.parse_rows("default,fp16")
    with pytest.raises(ValueError, match="no row chosen"):
        TM.parse_rows(" , ")
    with pytest.raises(SystemExit) as exit_:
        TM.main(["--rows", "fp16"])
    assert exit_.value.code == 2
    assert "unknown row 'fp16': the rows are default, float32, bfloat16, threads1, avx2" in capsys.readouterr().err


def test_the_rows_are_the_issues():
    assert TM.ROWS == {"default": {}, "float32": {"NSTLIB_PRECISION": "float32"},
                       "bfloat16": {"NSTLIB_PRECISION": "bfloat16"}, "threads1": {"NSTLIB_THREADS": "1"},
                       "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}}


def test_lecture_command_fills_in_the_makefiles_lecture_run(tmp_path):
    template = "env NSTLIB_MODE=cpu python -m pytest {notebooks} --nbval-lax --lectures-html '{lectures}' --durations=15"
    cmd = TM.lecture_command(template, ["notebooks/01 tour.ipynb", "notebooks/02.ipynb"], tmp_path / "lectures",
                             tmp_path / "l.xml")
    assert cmd[:2] == ["bash", "-c"]
    assert cmd[2] == (f"env NSTLIB_MODE=cpu python -m pytest 'notebooks/01 tour.ipynb' notebooks/02.ipynb --nbval-lax "
                      f"--lectures-html '{tmp_path / 'lectures'}' --durations=15 --junitxml={tmp_path / 'l.xml'}")
    with pytest.raises(ValueError, match=r"no \{lectures\}"):
        TM.lecture_command("pytest {notebooks} --lectures-html build/lectures", ["nb"], tmp_path, tmp_path / "x.xml")


def test_a_run_past_its_time_is_stopped_with_its_children(tmp_path):
    """The time limit, and no process left behind: a child in a session of its own (as Jupyter starts
    kernels) is found by the marker in its environment."""
    pid_file = tmp_path / "child.pid"
    script = (f"import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], "
              f"start_new_session=True); open({str(pid_file)!r}, 'w').write(str(p.pid)); time.sleep(60)")
    problem = TM.run_bounded([sys.executable, "-c", script], dict(os.environ), 3, tmp_path / "log")
    assert problem == "timed out after 3 s"
    child = int(pid_file.read_text())
    assert not TM.psutil.pid_exists(child) or TM.psutil.Process(child).status() == TM.psutil.STATUS_ZOMBIE
    assert TM.run_bounded([sys.executable, "-c", "raise SystemExit(3)"], {}, 30, tmp_path / "log") == "exit status 3"
    assert TM.run_bounded(["true"], {}, 0, tmp_path / "log").startswith("not run")


def test_main_refuses_a_lecture_run_without_its_placeholders(monkeypatch, capsys):
    monkeypatch.setenv("NSTLIB_WEIGHTS", "caffe:/nowhere/w.pth")
    monkeypatch.setenv(TM.LECTURES_RUN_VAR, "pytest {notebooks} --lectures-html build/lectures")
    with pytest.raises(SystemExit) as exit_:
        TM.main(["--rows", "default"])
    assert exit_.value.code == 2 and "has no {lectures}" in capsys.readouterr().err
    monkeypatch.delenv(TM.LECTURES_RUN_VAR)
    with pytest.raises(SystemExit):
        TM.main(["--rows", "default"])
    assert "is not set: run `make test-machines`" in capsys.readouterr().err
    monkeypatch.setenv("NSTLIB_WEIGHTS", "random")
    with pytest.raises(SystemExit):
        TM.main(["--rows", "default", "--no-lectures"])
    assert "need pretrained weights" in capsys.readouterr().err
