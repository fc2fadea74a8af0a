"""Which claim holds where: the cpu lecture run and the pretrained tests under several machine settings.

    make test-machines                                   # every row, every notebook (about 1.5 h on 2 cores)
    make test-machines TEST_MACHINES_ROWS=float32,avx2 LECTURE_NOTEBOOKS=notebooks/01_setup_and_tour.ipynb

For each row (a name and a few environment variables, see ROWS) it runs, with the row's variables
on top of the environment:

(a) the cpu lecture run, exactly as ``make lectures`` does: the Makefile's ``LECTURES_RUN``, which
    ``make test-machines`` hands over in ``TEST_MACHINES_LECTURES_RUN`` with ``{notebooks}`` and
    ``{lectures}`` where the notebooks and the output folder go (the lecture run's options live in
    the Makefile only). Each row writes its executed notebooks to OUT/<row>/lectures/.
(b) the tests on the pretrained network: ``pytest TESTS -m pretrained`` (tests/test_pretrained.py,
    test_pretrained_beyond.py, test_pretrained_speed.py, test_style_strength.py and the one in
    test_bounds.py), with NSTLIB_WEIGHTS and NSTLIB_IMAGE_DIR from the environment (make sets
    them as for the lecture run) and MPLBACKEND=Agg, as ``make unit`` runs them (without
    NSTLIB_SMOKE, which they do not read).

Then it reads every claim line (``run.check``: "✓ claim (measured: ...)", "✗ ...", "– ...") from each
row's executed notebooks and every test's outcome from each row's JUnit XML, and prints a markdown
table: one line per claim with its verdict in each row (? where the cell did not run), one line
per pretrained test that failed in some row, and per row the lecture cells and tests passed and
failed and the wall time. The table is also written to OUT/table.md. The exit status is 1 when a
row failed (a lecture cell or a test failed, a run timed out), 2 for a usage error.

Every run has a time limit (the row's, --timeout-min, shared by its two runs) and leaves no process
behind: each run is its own process group, and every process that carries the run's marker in its
environment (Jupyter kernels start sessions of their own) is stopped when the run ends.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import psutil  # comes with ipykernel

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from lectures_html import format_seconds  # noqa: E402  (the lecture index's "1 min 37 s", one home)

#: The rows: a name and the environment variables it sets.
ROWS: dict[str, dict[str, str]] = {
    "default": {},
    "float32": {"NSTLIB_PRECISION": "float32"},
    "bfloat16": {"NSTLIB_PRECISION": "bfloat16"},
    "threads1": {"NSTLIB_THREADS": "1"},
    "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"},  # a laptop without AVX-512
}

LECTURES_RUN_VAR = "TEST_MACHINES_LECTURES_RUN"  # the Makefile's LECTURES_RUN, with {notebooks} and {lectures}
MARKER_VAR = "TEST_MACHINES_RUN"  # set in each run's environment, to find what it left behind
HELD, FAILED, UNCHECKED, MISSING = "✓", "✗", "–", "?"
CLAIM_MARKS = (HELD, FAILED, UNCHECKED)
CLAIM_WIDTH = 70


# ------------------------------------------------------------------ rows

def parse_rows(spec: str) -> list[str]:
    """'default,float32' -> ['default', 'float32']; an unknown name is a ValueError that lists the rows."""
    names = [name.strip() for name in spec.split(",") if name.strip()]
    unknown = [name for name in names if name not in ROWS]
    if unknown:
        raise ValueError(f"unknown row{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}: "
                         f"the rows are {', '.join(ROWS)}")
    if not names:
        raise ValueError(f"no row chosen: the rows are {', '.join(ROWS)}")
    return list(dict.fromkeys(names))  # each once, in the order given


def describe_env(env: dict[str, str]) -> str:
    """{'A': '1', 'B': 'x'} -> 'A=1 B=x'; {} -> 'no change'."""
    return " ".join(f"{k}={v}" for k, v in env.items()) or "no change"


# ------------------------------------------------------------------ what a row's runs left

def parse_claim(line: str) -> tuple[str, str] | None:
    """(mark, claim) of a `run.check` line, e.g. "✓ x holds (measured: 3)" -> ("✓", "x holds"); None otherwise.

    The claim is the text before " (measured: " or " (not checked " (a claim may hold parentheses of
    its own); lines without either, such as the self-checks' "✓ gram_matrix matches ...", are not claims.
    """
    line = line.rstrip()
    if len(line) < 3 or line[0] not in CLAIM_MARKS or line[1] != " " or not line.endswith(")"):
        return None
    ends = [i for i in (line.find(" (measured: "), line.find(" (not checked ")) if i > 1]
    if not ends:
        return None
    return line[0], line[2:min(ends)].strip()


def _text(value: str | list[str]) -> str:
    """A notebook's multi-line string: one string, or a list of lines as nbformat may write it."""
    return "".join(value) if isinstance(value, list) else value


def notebook_claims(nb: dict) -> Iterator[tuple[str, str]]:
    """(mark, claim) of every claim line in a notebook's stream outputs, in order."""
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        stream = "".join(_text(out.get("text", "")) for out in cell.get("outputs", []) if out.get("output_type") == "stream")
        for line in stream.splitlines():
            claim = parse_claim(line)
            if claim:
                yield claim


def collect_claims(folder: Path) -> dict[tuple[str, str], str]:
    """{(notebook, claim): mark} from the executed notebooks in folder (<name>.ipynb; empty if none).

    A claim checked more than once in a notebook counts as failed if it failed once.
    """
    claims: dict[tuple[str, str], str] = {}
    for path in sorted(folder.glob("*.ipynb")):
        for mark, claim in notebook_claims(json.loads(path.read_text(encoding="utf-8"))):
            key = (path.stem, claim)
            if claims.get(key) != FAILED:
                claims[key] = mark
    return claims


def junit_outcomes(path: Path) -> dict[str, str]:
    """{test id: 'passed' | 'failed' | 'skipped'} from pytest's JUnit XML (an error counts as failed)."""
    outcomes: dict[str, str] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        test = f"{case.get('classname', '')}::{case.get('name', '')}"
        if case.find("failure") is not None or case.find("error") is not None:
            outcomes[test] = "failed"  # a failed call, or an error in setup or teardown
        elif case.find("skipped") is not None:
            outcomes.setdefault(test, "skipped")
        else:
            outcomes.setdefault(test, "passed")
    return outcomes


def count(outcomes: dict[str, str] | None) -> dict[str, int]:
    """{'passed': n, 'failed': n, 'skipped': n} of a run's outcomes (empty when the run left none)."""
    if outcomes is None:
        return {}
    return {k: sum(v == k for v in outcomes.values()) for k in ("passed", "failed", "skipped")}


# ------------------------------------------------------------------ one row

@dataclass
class RunResult:
    """One pytest run of a row: its outcomes (None: no JUnit XML came back) and what went wrong."""

    outcomes: dict[str, str] | None = None
    problem: str = ""  # "exit status 1", "timed out after 60 min", ... ('' : it passed)


@dataclass
class RowResult:
    """What one row gave: the claims of its lecture run, its two pytest runs, its wall time."""

    name: str
    env: dict[str, str]
    claims: dict[tuple[str, str], str] = field(default_factory=dict)
    lectures: RunResult | None = None  # None: not run (--no-lectures)
    tests: RunResult | None = None  # None: not run (--no-tests)
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return any(run is not None and run.problem for run in (self.lectures, self.tests))


def _leftovers(marker: str) -> list[psutil.Process]:
    """This user's processes whose environment carries the run's marker (its kernels, their children)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.pid != os.getpid() and proc.environ().get(MARKER_VAR) == marker:
                found.append(proc)
        except (psutil.Error, OSError):  # gone, another user's, a zombie
            continue
    return found


def _stop(proc: subprocess.Popen, marker: str) -> int:
    """Stop a run and everything it started: SIGINT to its group (pytest ends, nbval stops its kernel), then
    SIGKILL to what is left. Returns how many processes had to be killed."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    left = _leftovers(marker)
    for p in left:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(left, timeout=10)
    return len(left)


def run_bounded(cmd: list[str], env: dict[str, str], timeout: float, log: Path) -> str:
    """Run cmd with its output in log, for at most timeout seconds. Returns '' or what went wrong."""
    if timeout <= 0:
        return "not run: the row's time was spent"
    marker = uuid.uuid4().hex
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w", encoding="utf-8") as out:
        proc = subprocess.Popen(cmd, env={**env, MARKER_VAR: marker}, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=ROOT, start_new_session=True)
        try:
            status = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _stop(proc, marker)
            return f"timed out after {format_seconds(timeout)}"
        except BaseException:  # Ctrl-C, SIGTERM: stop the run before leaving
            _stop(proc, marker)
            raise
    killed = _stop(proc, marker)  # a kernel left running, if any
    if killed:
        print(f"  (stopped {killed} process(es) the run left behind)", flush=True)
    return f"exit status {status}" if status else ""


def lecture_command(template: str, notebooks: list[str], folder: Path, junit: Path) -> list[str]:
    """The shell command of one row's lecture run: LECTURES_RUN with its notebooks and folder, and --junitxml."""
    missing = [p for p in ("{notebooks}", "{lectures}") if p not in template]
    if missing:
        raise ValueError(f"{LECTURES_RUN_VAR} has no {' or '.join(missing)}: `make test-machines` sets it "
                         "from the Makefile's LECTURES_RUN")
    if "'" in str(folder):
        raise ValueError(f"the output folder {folder} holds a quote: choose another --out")
    cmd = (template.replace("{notebooks}", " ".join(shlex.quote(n) for n in notebooks))
           .replace("{lectures}", str(folder)))
    return ["bash", "-c", f"{cmd} --junitxml={shlex.quote(str(junit))}"]


def tests_command(tests: list[str], junit: Path) -> list[str]:
    """The pytest command of one row's pretrained tests."""
    return [sys.executable, "-m", "pytest", *tests, "-m", "pretrained", f"--junitxml={junit}", "--durations=10"]


def run_pytest(name: str, what: str, cmd: list[str], env: dict[str, str], deadline: float,
               junit: Path, log: Path) -> RunResult:
    """One pytest run of a row, with its outcomes from its JUnit XML; prints a line before and after."""
    print(f"[{name}] {what} (log: {log})", flush=True)
    junit.unlink(missing_ok=True)
    start = time.monotonic()
    problem = run_bounded(cmd, env, deadline - start, log)
    outcomes = junit_outcomes(junit) if junit.exists() else None
    if outcomes is None and not problem:
        problem = "no JUnit XML was written"
    c = count(outcomes)
    tally = f"{c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped" if c else "no outcomes"
    print(f"[{name}] {what}: {tally} in {format_seconds(time.monotonic() - start)}"
          f"{f' ({problem})' if problem else ''}", flush=True)
    if problem:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
        print("\n".join(f"    {line}" for line in lines), flush=True)
    return RunResult(outcomes, problem)


def run_row(name: str, out: Path, notebooks: list[str], tests: list[str], lectures_run: str | None,
            timeout: float) -> RowResult:
    """Both runs of one row (either may be left out: lectures_run None or tests empty)."""
    row = RowResult(name, ROWS[name])
    env = {**os.environ, **row.env}
    folder = out / name
    start = time.monotonic()
    deadline = start + timeout
    if lectures_run is not None:
        lectures = folder / "lectures"
        for old in (*lectures.glob("*.ipynb"), *lectures.glob("*.html")):  # an earlier run's notebooks
            old.unlink()
        cmd = lecture_command(lectures_run, notebooks, lectures, folder / "lectures.xml")
        row.lectures = run_pytest(name, "lecture run", cmd, env, deadline, folder / "lectures.xml", folder / "lectures.log")
        row.claims = collect_claims(lectures) if lectures.is_dir() else {}
    if tests:
        env_tests = {**env, "MPLBACKEND": "Agg"}
        row.tests = run_pytest(name, "pretrained tests", tests_command(tests, folder / "tests.xml"), env_tests,
                               deadline, folder / "tests.xml", folder / "tests.log")
    row.seconds = time.monotonic() - start
    return row


# ------------------------------------------------------------------ the table

def abbreviate(text: str, width: int = CLAIM_WIDTH) -> str:
    """text cut to width characters, ending in … when cut."""
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def _cell(text: str) -> str:
    """text safe inside a markdown table cell."""
    return text.replace("|", "\\|")


def _table(header: list[str], lines: Iterable[list[str]]) -> list[str]:
    rows = [header, ["---"] * len(header), *lines]
    return ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]


def _ordered_union(dicts: Iterable[dict]) -> list:
    """The keys of several dicts, each once, in the order they first appear."""
    return list(dict.fromkeys(key for d in dicts for key in d))


TEST_MARKS = {"passed": HELD, "failed": FAILED, "skipped": "skipped"}


def _test_name(test_id: str) -> str:
    """'tests.test_pretrained::test_x[a]' -> 'test_pretrained.py::test_x[a]'."""
    module, _, name = test_id.partition("::")
    return f"{module.rsplit('.', 1)[-1]}.py::{name}" if module else name


def _counts(run: RunResult | None) -> str:
    if run is None:
        return "not run"
    c = count(run.outcomes)
    if not c:
        text = "?"
    else:
        text = f"{c['passed']} / {c['failed']}" + (f" ({c['skipped']} skipped)" if c["skipped"] else "")
    return f"{text}: {run.problem}" if run.problem else text


def render_table(rows: list[RowResult], shared_env: dict[str, str] | None = None) -> str:
    """The markdown report: claims x rows, the pretrained tests that failed somewhere, one summary line per row."""
    names = [row.name for row in rows]
    lines = ["# Which claim held where", "",
             "Rows: " + "; ".join(f"**{row.name}** ({describe_env(row.env)})" for row in rows) + "."]
    if shared_env:
        lines.append(f"Every row also ran with {describe_env(shared_env)} (from the environment, unless the row sets it).")

    if any(row.lectures is not None for row in rows):
        claims = sorted(_ordered_union(row.claims for row in rows), key=lambda key: key[0])  # stable: notebook order kept
        lines += ["", f"## Claims ({HELD} held, {FAILED} failed, {UNCHECKED} not checked, {MISSING} the cell did not run)", ""]
        if claims:
            lines += _table(["notebook", "claim", *names],
                            ([nb, abbreviate(claim), *(row.claims.get((nb, claim), MISSING) for row in rows)]
                             for nb, claim in claims))
        else:
            lines.append("No claim was printed in any row.")

    if any(row.tests is not None for row in rows):
        outcomes = [(row.tests.outcomes if row.tests else None) or {} for row in rows]
        failed = [t for t in _ordered_union(outcomes) if any(o.get(t) == "failed" for o in outcomes)]
        lines += ["", "## Pretrained tests that failed in some row", ""]
        if failed:
            lines += _table(["test", *names], ([_test_name(t), *(TEST_MARKS.get(o.get(t, ""), MISSING) for o in outcomes)]
                                               for t in failed))
        else:
            lines.append("None." if any(outcomes) else "No test outcome came back.")

    lines += ["", "## Rows", ""]
    lines += _table(["row", "lecture cells passed / failed", "pretrained tests passed / failed", "wall time", "status"],
                    ([row.name, _counts(row.lectures), _counts(row.tests), format_seconds(row.seconds),
                      "FAILED" if row.failed else "passed"] for row in rows))
    return "\n".join(lines) + "\n"


def exit_status(rows: list[RowResult]) -> int:
    """0 when every row passed, 1 otherwise."""
    return 1 if any(row.failed for row in rows) else 0


# ------------------------------------------------------------------ the command line

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Paths are relative to the repository root, where the runs start.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated rows (default: all: {','.join(ROWS)})")
    parser.add_argument("--notebooks", nargs="+", default=["notebooks"], help="notebooks for the lecture run (default: notebooks)")
    parser.add_argument("--tests", nargs="+", default=["tests"],
                        help="where pytest looks for the pretrained tests (-m pretrained; default: tests)")
    parser.add_argument("--out", type=Path, default=Path("build/machines"),
                        help="OUT/<row>/lectures/, its logs and JUnit XML, OUT/table.md (default build/machines)")
    parser.add_argument("--timeout-min", type=float, default=60.0, help="time limit of a row, both runs together (default 60)")
    parser.add_argument("--no-lectures", action="store_true", help="leave out the lecture runs")
    parser.add_argument("--no-tests", action="store_true", help="leave out the pretrained tests")
    args = parser.parse_args(argv)
    try:
        names = parse_rows(args.rows)
    except ValueError as e:
        parser.error(str(e))
    lectures_run = None if args.no_lectures else os.environ.get(LECTURES_RUN_VAR, "")
    if lectures_run == "":
        parser.error(f"{LECTURES_RUN_VAR} is not set: run `make test-machines` (it passes the Makefile's lecture "
                     "run), or add --no-lectures")
    out = args.out if args.out.is_absolute() else ROOT / args.out
    if lectures_run is not None:
        try:
            lecture_command(lectures_run, args.notebooks, out, out / "check.xml")  # its placeholders, the folder
        except ValueError as e:
            parser.error(str(e))
    weights = os.environ.get("NSTLIB_WEIGHTS", "").strip()
    if not weights or weights.lower().startswith("random"):
        parser.error(f"NSTLIB_WEIGHTS={weights!r}: the claims and the pretrained tests need pretrained weights "
                     "(make test-machines sets them from ../shared/weights)")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a killed make: stop the runs on the way out

    shared = {k: os.environ[k] for k in sorted({k for env in ROWS.values() for k in env}) if k in os.environ}
    print(f"test-machines: rows {', '.join(names)}; notebooks {' '.join(args.notebooks)}; out {out}"
          + (f"; every row also with {describe_env(shared)}" if shared else ""), flush=True)
    results = []
    for name in names:
        results.append(run_row(name, out, args.notebooks, [] if args.no_tests else args.tests, lectures_run,
                               args.timeout_min * 60))
        table = render_table(results, shared)  # written after each row: an interrupted run keeps what it had
        out.mkdir(parents=True, exist_ok=True)
        (out / "table.md").write_text(table, encoding="utf-8")
    print("\n" + table, flush=True)
    print(f"test-machines: the table is in {out / 'table.md'}", flush=True)
    return exit_status(results)


if __name__ == "__main__":
    sys.exit(main())
