"""A class on one machine: a stand-in VGG-19 checkpoint, and kernels whose memory is measured.

`make_standin_vgg19(torch_home)` writes ``$TORCH_HOME/hub/checkpoints/vgg19-dcbb9e9d.pth`` with
torchvision's exact VGG-19 state_dict layout (every key and shape, the classifier included,
574.7 MB) and random values: what `nstlib.weights` reads by default, without the real file.

`run_kernels(n, torch_home, ...)` starts n Python processes that each load the default weights
(``load_vgg()``) and run one 192x256 forward, waits until all are done, then reads each one's
PSS (proportional set size: shared pages divided among the processes sharing them) from
/proc/PID/smaps_rollup while all of them are alive, and its peak RSS (VmHWM). Used by
tests/test_hub.py and by ``python tests/hub_tools.py`` (the README's numbers).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHECKPOINT = "vgg19-dcbb9e9d.pth"

# torchvision's vgg19().state_dict(): features.N (16 convolutions), classifier.0/3/6
_CONVS = [(0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256), (12, 256, 256),
          (14, 256, 256), (16, 256, 256), (19, 256, 512), (21, 512, 512), (23, 512, 512),
          (25, 512, 512), (28, 512, 512), (30, 512, 512), (32, 512, 512), (34, 512, 512)]
_LINEAR = [(0, 25088, 4096), (3, 4096, 4096), (6, 4096, 1000)]


def standin_state(seed: int = 0) -> dict:
    """Random tensors in torchvision's VGG-19 layout (He-normal convolutions; the classifier uniform)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    state = {}
    for i, c_in, c_out in _CONVS:
        state[f"features.{i}.weight"] = torch.randn(c_out, c_in, 3, 3, generator=gen) * (2.0 / (c_out * 9)) ** 0.5
        state[f"features.{i}.bias"] = torch.zeros(c_out)
    for i, n_in, n_out in _LINEAR:
        state[f"classifier.{i}.weight"] = torch.empty(n_out, n_in).uniform_(-0.01, 0.01, generator=gen)
        state[f"classifier.{i}.bias"] = torch.zeros(n_out)
    return state


def make_standin_vgg19(torch_home: Path, seed: int = 0) -> Path:
    """Write the stand-in checkpoint where torch's cache keeps the real one; returns its path."""
    import torch

    path = Path(torch_home) / "hub" / "checkpoints" / CHECKPOINT
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file():
        tmp = path.with_name(path.name + ".writing")
        torch.save(standin_state(seed), tmp)
        os.replace(tmp, path)
    return path


# The kernel: load the default weights, one forward at 192x256, report, wait for "exit".
KERNEL = r"""
import sys, time, torch
t0 = time.perf_counter()
from nstlib.vgg import load_vgg, GATYS_STYLE_LAYERS, GATYS_CONTENT_LAYERS
net = load_vgg()
x = torch.rand(1, 3, 192, 256, generator=torch.Generator().manual_seed(0))
with torch.no_grad():
    out = net.extract(x, [*GATYS_STYLE_LAYERS, *GATYS_CONTENT_LAYERS])
del out
print(f"ready {time.perf_counter() - t0:.2f} {torch.get_num_threads()}", flush=True)
sys.stdin.readline()
"""


def _pss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    raise RuntimeError(f"no Pss line in /proc/{pid}/smaps_rollup")


def _hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmHWM line in /proc/{pid}/status")


def run_kernels(n: int, torch_home: Path, *, pythonpath: str | None = None, threads: int = 1,
                timeout: float = 240.0) -> list[dict]:
    """n kernels at once; per kernel: pss_mib, peak_rss_mib (VmHWM), load_and_forward_s."""
    env = {k: v for k, v in os.environ.items() if k not in ("NSTLIB_WEIGHTS", "NSTLIB_THREADS")}
    env.update(TORCH_HOME=str(torch_home), OMP_NUM_THREADS=str(threads), NSTLIB_THREADS=str(threads),
               PYTHONPATH=pythonpath or str(REPO))
    procs = [subprocess.Popen([sys.executable, "-c", KERNEL], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env, cwd=pythonpath or str(REPO))
             for _ in range(n)]
    try:
        lines = []
        deadline = time.monotonic() + timeout
        for p in procs:
            line = p.stdout.readline()
            if not line.startswith("ready") or time.monotonic() > deadline:
                p.kill()
                raise RuntimeError(f"a kernel failed: {line!r} {p.stderr.read()[-2000:]}")
            lines.append(line.split())
        out = [{"pss_mib": _pss_kib(p.pid) / 1024, "peak_rss_mib": _hwm_kib(p.pid) / 1024,
                "load_and_forward_s": float(line[1]), "threads": int(line[2])} for p, line in zip(procs, lines)]
    finally:
        for p in procs:
            try:
                p.stdin.write("exit\n")
                p.stdin.close()
            except OSError:
                pass
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
    return out


if __name__ == "__main__":  # python tests/hub_tools.py TORCH_HOME [OLD_NSTLIB_PARENT]
    home = Path(sys.argv[1])
    make_standin_vgg19(home)
    for label, pp in [("now", None)] + ([("before", sys.argv[2])] if len(sys.argv) > 2 else []):
        subprocess.run(["sync"])
        res = run_kernels(4, home, pythonpath=pp)
        print(label, json.dumps([{k: round(v, 1) for k, v in r.items()} for r in res]))


# One style-transfer run (for the threads measurement): 160 px, 40 L-BFGS steps, float32.
RUN = r"""
import sys, time, torch
from nstlib import data
from nstlib.stylize import stylize
from nstlib.vgg import load_vgg
net = load_vgg()
content, style = data.load("chelsea", 160), data.load("swirls", 160)
print("loaded", flush=True)
sys.stdin.readline()
t0 = time.perf_counter()
stylize(content, style, size=160, steps=40, init="content", precision="float32", extractor=net, progress=False)
print(f"done {time.perf_counter() - t0:.2f} {torch.get_num_threads()}", flush=True)
"""


def run_concurrent(n: int, threads: int, torch_home: Path) -> dict:
    """n runs at once, NSTLIB_THREADS=threads each: each run's wall time, and runs per minute."""
    env = {k: v for k, v in os.environ.items() if k not in ("NSTLIB_WEIGHTS", "OMP_NUM_THREADS")}
    env.update(TORCH_HOME=str(torch_home), NSTLIB_THREADS=str(threads), PYTHONPATH=str(REPO))
    procs = [subprocess.Popen([sys.executable, "-c", RUN], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=env, cwd=str(REPO)) for _ in range(n)]
    for p in procs:
        assert p.stdout.readline().startswith("loaded")
    t0 = time.perf_counter()
    for p in procs:  # all start together, after every process has loaded
        p.stdin.write("go\n")
        p.stdin.flush()
    walls = []
    for p in procs:
        line = p.stdout.readline().split()
        walls.append(float(line[1]))
        p.wait()
    total = time.perf_counter() - t0
    return {"runs": n, "threads": threads, "wall_s": [round(w, 1) for w in walls], "all_done_s": round(total, 1),
            "runs_per_min": round(60 * n / total, 2)}
