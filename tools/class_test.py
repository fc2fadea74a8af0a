"""A class of N students on one machine, measured: `make class-test` (python tools/class_test.py).

What a JupyterHub does, on this machine: N real Jupyter kernels (jupyter_client, ipykernel) with
one shared TORCH_HOME. Each kernel runs notebook 1's set-up cells (imports, the network, the
photo), all at once, as a class does when the lecture starts. Then K of them run the tuning
panel's transfer (its CPU size, its fast schedule) while the other N - K answer a trivial cell
every few seconds, as idle students' notebooks do. The same transfer is first run alone, for
the slow-down.

It reports: PSS (proportional set size: shared pages divided among the processes sharing them)
per kernel and in total, the machine's available memory at the worst moment, each idle
kernel's slowest reply, each transfer's wall time against the transfer alone, and whether any
kernel died. Every kernel is shut down at the end, whatever happened (a time limit, Ctrl-C, an
error), and the script checks that none is left.

    python tools/class_test.py                       # 30 kernels, 4 running
    python tools/class_test.py --kernels 8 --running 2 --size 96

Without --torch-home it writes a stand-in VGG-19 checkpoint (torchvision's layout and size,
random values; tests/hub_tools.py) into a temporary TORCH_HOME: the memory and the time are
those of the real file, the pictures are not.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import signal
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

NOTEBOOK_1 = REPO / "notebooks" / "01_setup_and_tour.ipynb"
#: The last set-up cell of notebook 1 a kernel runs: the one that loads the photo.
SETUP_UNTIL = 'load_or_fallback("tubingen"'
#: The idle students' cell, and how often each sends it (seconds, with a random offset).
IDLE_CELL, IDLE_EVERY = "1 + 1", 3.0
#: The bound the issue sets on an idle kernel's reply while transfers run (seconds).
REPLY_LIMIT = 2.0


@dataclass
class Kernel:
    """One student's kernel and what was measured of it."""

    index: int
    role: str = "idle"  # "idle" or "running"
    pid: int = 0
    setup_s: float = float("nan")
    pss_after_setup_mib: float = float("nan")
    pss_peak_mib: float = 0.0
    peak_rss_mib: float = float("nan")
    transfer_s: float = float("nan")
    replies: int = 0
    slowest_reply_s: float = 0.0
    alive_at_end: bool = False
    error: str = ""
    manager: object = field(default=None, repr=False)
    client: object = field(default=None, repr=False)


def setup_code(notebook: Path = NOTEBOOK_1) -> str:
    """Notebook 1's code cells from the first up to the one that loads the photo, joined."""
    cells = [c for c in json.loads(notebook.read_text())["cells"] if c["cell_type"] == "code"]
    code = []
    for cell in cells:
        source = "".join(cell["source"])
        code.append(source)
        if SETUP_UNTIL in source:
            return "\n\n".join(code)
    raise ValueError(f"{notebook.name} has no cell with {SETUP_UNTIL!r}: class_test.py's SETUP_UNTIL is out of date.")


def transfer_code(size: int) -> str:
    """The tuning panel's run at `size` (its fast schedule), timed in the kernel."""
    return (
        "import time as _t\n"
        "from nstlib.panel_settings import PanelSettings\n"
        "from nstlib.stylize import stylize\n"
        f"_photo = data.load_or_fallback('tubingen', size={size})[0]\n"
        f"_painting = data.load_or_fallback('starry_night', size={size})[0]\n"
        f"_settings = PanelSettings(size={size}).run_settings()\n"
        "_t0 = _t.perf_counter()\n"
        "_r = stylize(_photo, _painting, _settings, extractor=net, progress=False)\n"
        "print('transfer', round(_t.perf_counter() - _t0, 2), _r.steps_done, _r.settings.get('precision'))\n"
    )


def _proc_kib(pid: int, path: str, key: str) -> float:
    """A 'Key: N kB' line of /proc/PID/<path> in KiB (nan if the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/{path}").read_text().splitlines():
            if line.startswith(key):
                return float(line.split()[1])
    except (OSError, ValueError):
        pass
    return float("nan")


def mem_available_mib() -> float:
    """The machine's available memory (MemAvailable: free memory and what the kernel can reclaim)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return float(line.split()[1]) / 1024
    return float("nan")


def execute(kernel: Kernel, code: str, timeout: float) -> tuple[float, str]:
    """Run `code` in the kernel and wait for its reply: (seconds, its printed output); RuntimeError
    with the kernel's traceback if the cell failed, TimeoutError if no reply came in time."""
    kc = kernel.client
    t0 = time.perf_counter()
    msg_id = kc.execute(code, store_history=False)
    out: list[str] = []
    deadline = time.monotonic() + timeout
    while True:  # output first, then the reply: the iopub stream ends with status idle
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"kernel {kernel.index}: no reply in {timeout:.0f} s")
        try:
            msg = kc.get_iopub_msg(timeout=min(left, 1.0))
        except queue.Empty:
            if not kernel.manager.is_alive():
                raise RuntimeError(f"kernel {kernel.index} died") from None
            continue
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            out.append(content["text"])
        elif kind == "error":
            raise RuntimeError(f"kernel {kernel.index}: {content['ename']}: {content['evalue']}")
        elif kind == "status" and content["execution_state"] == "idle":
            return time.perf_counter() - t0, "".join(out)


class Monitor(threading.Thread):
    """Samples the machine's available memory (every 0.5 s) and every kernel's PSS (every 5 s)."""

    def __init__(self, kernels: Sequence[Kernel]) -> None:
        super().__init__(daemon=True)
        self.kernels, self.done = kernels, threading.Event()
        self.min_available_mib, self.peak_total_pss_mib = float("inf"), 0.0

    def run(self) -> None:
        last_pss = 0.0
        while not self.done.wait(0.5):
            self.min_available_mib = min(self.min_available_mib, mem_available_mib())
            if time.monotonic() - last_pss >= 5.0:
                last_pss = time.monotonic()
                self.sample_pss()

    def sample_pss(self) -> float:
        total = 0.0
        for k in self.kernels:
            pss = _proc_kib(k.pid, "smaps_rollup", "Pss:") / 1024
            if pss == pss:
                k.pss_peak_mib = max(k.pss_peak_mib, pss)
                total += pss
        self.peak_total_pss_mib = max(self.peak_total_pss_mib, total)
        return total


def start_kernels(n: int, env: dict[str, str], cwd: Path, timeout: float, into: list[Kernel], logs: Path) -> None:
    """n ipykernels (the Python running this script) appended to `into` as they start (so that a
    failure half-way still shuts down those started), each with its client's channels open; each
    kernel's stderr goes to logs/kernel-N.log."""
    from jupyter_client import KernelManager

    for i in range(n):
        km = KernelManager(kernel_name="python3")
        with open(logs / f"kernel-{i}.log", "wb") as err:
            km.start_kernel(env=env, cwd=str(cwd), stderr=err)
        into.append(Kernel(i, manager=km, pid=km.provisioner.process.pid))
    for k in into:
        k.client = k.manager.client()
        k.client.start_channels()
        k.client.wait_for_ready(timeout=timeout)


def shut_down(kernels: Sequence[Kernel]) -> list[int]:
    """Every kernel shut down (asked, then killed after 10 s); returns the pids still alive after."""
    for k in kernels:
        try:
            if k.client is not None:
                k.client.stop_channels()
        except Exception:
            pass
        try:
            k.manager.shutdown_kernel(now=False, restart=False)
        except Exception:
            try:
                k.manager.shutdown_kernel(now=True)
            except Exception:
                pass
    left = []
    for k in kernels:
        if k.pid and Path(f"/proc/{k.pid}").exists():
            try:
                os.kill(k.pid, signal.SIGKILL)
                time.sleep(0.1)
            except OSError:
                pass
            stat = Path(f"/proc/{k.pid}/stat")
            if stat.exists() and stat.read_text().split()[2] != "Z":
                left.append(k.pid)
    return left


def _poll(kernel: Kernel, stop: threading.Event) -> None:
    """An idle student's kernel: IDLE_CELL every IDLE_EVERY seconds, the slowest reply kept."""
    rng = random.Random(kernel.index)
    while not stop.wait(IDLE_EVERY * rng.uniform(0.5, 1.5)):
        try:
            seconds, _ = execute(kernel, IDLE_CELL, timeout=120)
        except Exception as e:  # noqa: BLE001 - a dead or stuck kernel is a result, not a crash
            kernel.error = kernel.error or str(e)
            return
        kernel.replies += 1
        kernel.slowest_reply_s = max(kernel.slowest_reply_s, seconds)


def _in_threads(kernels: Sequence[Kernel], code: str, timeout: float, done) -> None:
    """Run `code` in every kernel at once, one thread each; done(kernel, seconds, output) after each
    reply. A kernel's failure goes to its .error."""
    def one(kernel: Kernel) -> None:
        try:
            done(kernel, *execute(kernel, code, timeout))
        except Exception as e:  # noqa: BLE001
            kernel.error = kernel.error or str(e)
    threads = [threading.Thread(target=one, args=(k,), daemon=True) for k in kernels]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _set_up(kernel: Kernel, seconds: float, _: str) -> None:
    kernel.setup_s = seconds


def _transferred(kernel: Kernel, _: float, out: str) -> None:
    kernel.transfer_s = float(out.split("transfer", 1)[1].split()[0])


def kernel_env(torch_home: Path, threads: int) -> dict[str, str]:
    """A hub user's environment: the shared TORCH_HOME, NSTLIB_THREADS, cpu lecture mode, inline figures."""
    env = {k: v for k, v in os.environ.items() if k not in ("NSTLIB_WEIGHTS", "MPLBACKEND", "NSTLIB_SMOKE")}
    env.update(TORCH_HOME=str(torch_home), NSTLIB_THREADS=str(threads), NSTLIB_MODE="cpu",
               JUPYTERHUB_USER="student", PYTHONPATH=str(REPO))
    return env


def run_class(n: int = 30, running: int = 4, size: int = 192, threads: int = 1, torch_home: Path | None = None,
              timeout_s: float = 1800.0, log=print) -> dict:
    """The measurement (module docstring); returns the report as a dict. Kernels are always shut down."""
    if not 0 < running < n:
        raise ValueError(f"--running must be between 1 and --kernels - 1 ({n - 1}), got {running}.")
    with tempfile.TemporaryDirectory(prefix="class-test-") as tmp:
        if torch_home is None:
            from hub_tools import make_standin_vgg19
            torch_home = Path(tmp) / "torch"
            make_standin_vgg19(torch_home)
        t_start = time.monotonic()
        kernels: list[Kernel] = []
        monitor = Monitor(kernels)

        def expired(*_):
            raise TimeoutError(f"the class test ran past its limit of {timeout_s:.0f} s")

        old_alarm, old_term = signal.signal(signal.SIGALRM, expired), signal.signal(signal.SIGTERM, expired)
        signal.alarm(int(timeout_s))
        try:
            log(f"starting {n} kernels (NSTLIB_THREADS={threads}, TORCH_HOME={torch_home}) ...")
            start_kernels(n, kernel_env(torch_home, threads), REPO / "notebooks", 600, into=kernels, logs=Path(tmp))
            monitor.start()
            log(f"  {time.monotonic() - t_start:.0f} s: all {n} started; notebook 1's set-up cells in every kernel at once ...")
            set_up_all(kernels)
            log(f"  {time.monotonic() - t_start:.0f} s: set-up done; the panel's transfer at {size} px alone ...")
            alone_s = transfer_alone(kernels[0], size)
            log(f"  {time.monotonic() - t_start:.0f} s: alone {alone_s:.1f} s; {running} transfers at once, "
                f"{n - running} idle kernels answering {IDLE_CELL!r} every ~{IDLE_EVERY:.0f} s ...")
            class_at_work(kernels[:running], kernels[running:], size)
            monitor.sample_pss()
            for k in kernels:
                k.peak_rss_mib = _proc_kib(k.pid, "status", "VmHWM:") / 1024
                k.alive_at_end = k.manager.is_alive()
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old_alarm)
            signal.signal(signal.SIGTERM, old_term)
            monitor.done.set()
            left = shut_down(kernels)
            log(f"  {time.monotonic() - t_start:.0f} s: {len(kernels)} kernels shut down"
                + (f"; STILL ALIVE: {left}" if left else ", none left"))
        return report(kernels, monitor, alone_s, size, threads, left, time.monotonic() - t_start)


def set_up_all(kernels: Sequence[Kernel]) -> None:
    """Notebook 1's set-up cells in every kernel at once; then each one's PSS, settled."""
    _in_threads(kernels, setup_code(), 1200, _set_up)
    failed = [k for k in kernels if k.error]
    if failed:
        raise RuntimeError(f"{len(failed)} kernels failed the set-up: {failed[0].error}")
    time.sleep(2.0)
    for k in kernels:
        k.pss_after_setup_mib = _proc_kib(k.pid, "smaps_rollup", "Pss:") / 1024


def transfer_alone(kernel: Kernel, size: int) -> float:
    """The panel's transfer in one kernel while the others are idle: its wall time (s)."""
    _in_threads([kernel], transfer_code(size), 900, _transferred)
    if kernel.error:
        raise RuntimeError(kernel.error)
    seconds, kernel.transfer_s = kernel.transfer_s, float("nan")
    return seconds


def class_at_work(busy: Sequence[Kernel], idle: Sequence[Kernel], size: int) -> None:
    """The busy kernels run the transfer at once while each idle one answers IDLE_CELL every few seconds."""
    for k in busy:
        k.role = "running"
    stop = threading.Event()
    pollers = [threading.Thread(target=_poll, args=(k, stop), daemon=True) for k in idle]
    for p in pollers:
        p.start()
    time.sleep(IDLE_EVERY)  # the idle kernels answer before the transfers start, too
    _in_threads(busy, transfer_code(size), 1800, _transferred)
    stop.set()
    for p in pollers:
        p.join(timeout=130)


def report(kernels: Sequence[Kernel], monitor: Monitor, alone_s: float, size: int, threads: int,
           left: list[int], wall_s: float) -> dict:
    """The measurement as a dict: the summary numbers, and every kernel's row."""
    idle = [k for k in kernels if k.role == "idle"]
    busy = [k for k in kernels if k.role == "running"]
    total_mib = Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0]
    pss = [k.pss_after_setup_mib for k in kernels]
    return {
        "kernels": len(kernels), "running": len(busy), "size": size, "threads_per_kernel": threads,
        "cpus": os.cpu_count(), "mem_total_mib": round(float(total_mib) / 1024),
        "died": [k.index for k in kernels if not k.alive_at_end], "errors": {k.index: k.error for k in kernels if k.error},
        "left_running": left, "wall_s": round(wall_s, 1),
        "setup_s_median": round(statistics.median(k.setup_s for k in kernels), 1),
        "setup_s_max": round(max(k.setup_s for k in kernels), 1),
        "pss_per_kernel_mib_median": round(statistics.median(pss)), "pss_per_kernel_mib_max": round(max(pss)),
        "pss_total_after_setup_mib": round(sum(pss)),
        "pss_running_peak_mib_max": round(max(k.pss_peak_mib for k in busy)),
        "pss_total_peak_mib": round(monitor.peak_total_pss_mib),
        "peak_rss_mib_max": round(max(k.peak_rss_mib for k in kernels)),
        "min_available_mib": round(monitor.min_available_mib),
        "idle_replies": sum(k.replies for k in idle),
        "slowest_idle_reply_s": round(max(k.slowest_reply_s for k in idle), 2),
        "idle_over_limit": sum(k.slowest_reply_s > REPLY_LIMIT for k in idle),
        "transfer_alone_s": round(alone_s, 1),
        "transfers_s": [round(k.transfer_s, 1) for k in busy],
        "slowdown": round(statistics.mean(k.transfer_s for k in busy) / alone_s, 2),
        "per_kernel": [{f.name: getattr(k, f.name) for f in fields(k) if f.name not in ("manager", "client")} for k in kernels],
    }


def markdown(r: dict) -> str:
    """The report's table, as the README gives it."""
    rows = [
        ("kernels (running transfers)", f"{r['kernels']} ({r['running']}), {r['threads_per_kernel']} thread each, "
                                        f"{r['cpus']} CPUs, {r['mem_total_mib'] / 1024:.0f} GiB"),
        ("set-up cells of notebook 1, all at once", f"median {r['setup_s_median']} s, slowest {r['setup_s_max']} s"),
        ("PSS per kernel after set-up", f"median {r['pss_per_kernel_mib_median']} MiB, max {r['pss_per_kernel_mib_max']} MiB"),
        ("PSS of a running kernel (peak)", f"{r['pss_running_peak_mib_max']} MiB"),
        ("PSS of all kernels", f"{r['pss_total_after_setup_mib']} MiB after set-up, {r['pss_total_peak_mib']} MiB at the peak"),
        ("peak RSS of one kernel (max)", f"{r['peak_rss_mib_max']} MiB"),
        ("machine's available memory, lowest", f"{r['min_available_mib']} MiB"),
        ("slowest idle reply", f"{r['slowest_idle_reply_s']} s ({r['idle_replies']} replies; "
                               f"{r['idle_over_limit']} kernels over {REPLY_LIMIT:.0f} s)"),
        (f"panel transfer at {r['size']} px", f"alone {r['transfer_alone_s']} s; {r['running']} at once "
                                              f"{', '.join(map(str, r['transfers_s']))} s: {r['slowdown']}x"),
        ("kernels died / left running", f"{len(r['died'])} / {len(r['left_running'])}"),
    ]
    return "\n".join(["| measure | value |", "| --- | --- |", *(f"| {a} | {b} |" for a, b in rows)])


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kernels", type=int, default=30, help="students' kernels (default 30)")
    p.add_argument("--running", type=int, default=4, help="of them, running a transfer at once (default 4)")
    p.add_argument("--size", type=int, default=192, help="the transfer's longest side (default 192, the panel's on a CPU)")
    p.add_argument("--threads", type=int, default=1, help="NSTLIB_THREADS per kernel (default 1)")
    p.add_argument("--torch-home", type=Path, default=None, help="a TORCH_HOME with the weights (default: a stand-in)")
    p.add_argument("--timeout-min", type=float, default=30.0, help="the whole test's limit (default 30)")
    p.add_argument("--out", type=Path, default=REPO / "build" / "class", help="report.md and report.json go here")
    a = p.parse_args(argv)
    r = run_class(a.kernels, a.running, a.size, a.threads, a.torch_home, 60 * a.timeout_min)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "report.json").write_text(json.dumps(r, indent=1))
    table = markdown(r)
    (a.out / "report.md").write_text(table + "\n")
    print(table)
    ok = not r["died"] and not r["left_running"] and not r["errors"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
