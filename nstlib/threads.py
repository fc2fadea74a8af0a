"""Threads per kernel: the NSTLIB_THREADS setting, and a default that suits a shared machine.

torch uses one thread per physical core by default, in every process. That is right for one
student on a laptop, and wrong for a class on one JupyterHub: thirty kernels that each start as
many threads as the machine has cores fight over the processor (each thread waits for the
slowest, threads spin while others hold the core), and every run gets slower than if each had
fewer threads. `apply_threads` sets torch's number of threads once per process, when nstlib
loads a network (`nstlib.vgg.load_vgg`, which every run, panel and command goes through),
never as a side effect of ``import nstlib``:

1. ``NSTLIB_THREADS=N`` (a positive whole number): N threads.
2. Otherwise the CPUs this process may use, when that is fewer than torch's default: the CPU
   limit of its container (cgroup ``cpu.max``, what a JupyterHub's ``cpu_limit`` sets), or
   the cores it is pinned to.
3. Otherwise, on a JupyterHub (``JUPYTERHUB_USER`` is set) with no CPU limit: at most
   `HUB_DEFAULT` threads. Measured (README, "A class on one JupyterHub"): four runs at once on
   2 cores finished sooner with 1 thread each than with 2.
4. Otherwise torch's default (one per physical core).

Without NSTLIB_THREADS, nstlib only ever lowers the number of threads torch has at that moment,
never raises it (a program that called ``torch.set_num_threads(1)`` keeps its one thread).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional

ENV_VAR = "NSTLIB_THREADS"
#: Threads per kernel on a JupyterHub that sets no CPU limit (and no NSTLIB_THREADS).
HUB_DEFAULT = 1

_applied: Optional[tuple[int, str]] = None


def cpu_limit() -> Optional[float]:
    """The CPUs this process may use by its cgroup's quota (cpu.max or cfs_quota), or None."""
    limits = []
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        rel = parts[2].lstrip("/")
        if parts[1] == "":  # cgroup v2: every level from the process's group up to the root
            folder = Path("/sys/fs/cgroup") / rel
            while True:
                limits.append(_quota_v2(folder / "cpu.max"))
                if folder == Path("/sys/fs/cgroup"):
                    break
                folder = folder.parent
        elif "cpu" in parts[1].split(","):  # cgroup v1
            for base in (Path("/sys/fs/cgroup/cpu,cpuacct"), Path("/sys/fs/cgroup/cpu")):
                limits.append(_quota_v1(base / rel))
                limits.append(_quota_v1(base))
    found = [x for x in limits if x is not None]
    return min(found) if found else None


def _quota_v2(file: Path) -> Optional[float]:
    try:
        quota, period = file.read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def _quota_v1(folder: Path) -> Optional[float]:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


def usable_cpus() -> int:
    """The cores this process may run on (its affinity), limited by its cgroup's CPU quota."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    limit = cpu_limit()
    if limit is not None:
        n = min(n, max(1, math.ceil(limit - 1e-9)))
    return max(1, n)


def choose_threads(torch_default: int) -> tuple[int, str]:
    """(threads, why) from NSTLIB_THREADS, the CPUs this process may use, a hub, or torch's default."""
    text = os.environ.get(ENV_VAR, "").strip()
    if text:
        if not text.isdigit() or int(text) < 1:
            raise ValueError(f"{ENV_VAR}={text!r}: expected a positive whole number of threads, e.g. {ENV_VAR}=2.")
        return int(text), f"{ENV_VAR}={int(text)}"
    usable = usable_cpus()
    if usable < torch_default:
        return usable, f"the {usable} CPU(s) this process may use (container limit or affinity)"
    if os.environ.get("JUPYTERHUB_USER") and torch_default > HUB_DEFAULT:
        return HUB_DEFAULT, (f"a JupyterHub with no CPU limit: {HUB_DEFAULT} thread(s) per kernel "
                             f"(set {ENV_VAR} to change)")
    return torch_default, "torch's default (one per core)"


def apply_threads() -> tuple[int, str]:
    """Set torch's number of threads once per process (see the module docstring); returns (threads, why)."""
    global _applied
    import torch

    if _applied is not None:
        return _applied
    current = torch.get_num_threads()
    n, why = choose_threads(current)
    if n != current:
        torch.set_num_threads(n)
    _applied = (n, why)
    return _applied


def threads_line() -> str:
    """One line for a notebook: how many threads torch uses, and why."""
    import torch

    n, why = _applied if _applied is not None else (torch.get_num_threads(), "not set by nstlib yet")
    return f"{n} CPU thread(s) per kernel ({why})"


def _reset_for_tests() -> None:
    global _applied
    _applied = None
