"""Where a GPU search's first 15 s go: the steps of its start, each timed in fresh processes.

    python bench/start_probe.py --out $OUT/start

A search on GPUs begins training only once three paths have ended: its own process's start
(Python, torch, the study's definition), the Triton depthwise kernels' compile (processes of
their own, into Triton's disk cache) and its workers' start (Python, torch, CUDA's context
under MPS, ``torch._dynamo``). This times, against the second each process was started:
- ``steps``: one process doing every step of the start in turn, alone on the machine, twice
  (the first on a fresh machine reads its files from disk);
- ``compile in one process``: each of the 12 kernels (3 kernels x :data:`KERNEL_SHAPES`)
  compiled in turn, in a process whose CUDA is up (the compiler's own seconds);
- ``compile``, split 4 ways (one process a shape: the search's way until 2026-12-02) and
  12 ways (one a kernel), alone, each into an empty cache;
- ``together``: the search's start as it runs: the kernels' compile (4 or 12 ways) beside
  an MPS daemon and 4 worker-like processes that are its clients;
- ``load``: a fresh process loading the 12 kernels from a filled cache.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# A child's steps: each prints "name seconds" (since the parent started it), then the next.
CHILD = r"""
import os, sys, time
T0 = float(os.environ["PROBE_T0"])
def said(name):
    print(name, round(time.time() - T0, 3), flush=True)
said("python")
steps = sys.argv[1].split(",")
for step in steps:
    if step == "torch":
        import torch
    elif step == "cli":
        import scaling.cli.searching
    elif step == "device_count":
        torch.cuda.device_count()
    elif step == "triton":
        import triton
    elif step == "capability":
        torch.cuda.get_device_capability()
    elif step == "cuda":
        torch.zeros(1, device="cuda")
    elif step == "dynamo":
        import torch._dynamo
    elif step == "prepare":
        from pathlib import Path
        from scaling.cli.searching import prepare_study
        prepare_study(Path("studies/cifar10.toml"), Path(os.environ["PROBE_STUDIES"]), None, "all",
                      source=".data/cifar10-jpeg.tar.gz", per_gpu="auto")
    elif step.startswith("kernel:"):  # kernel:K:S:part, part forward / input_grad / weight_grad / all
        from scaling import depthwise as dw
        _, k, s, part = step.split(":")
        k, s = int(k), int(s)
        x = torch.randn(2, 16, 9, 9, device="cuda", dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
        w = torch.randn(16, 1, k, k, device="cuda", dtype=torch.bfloat16)
        geo = dw._Geometry(x, k, s, (k // 2,) * 4)
        dy = torch.randn(2, 16, geo.oh, geo.ow, device="cuda", dtype=torch.bfloat16).contiguous(
            memory_format=torch.channels_last)
        if part in ("forward", "all"):
            dw._forward(x, w, geo)
        if part in ("input_grad", "all"):
            dw._input_grad(dy, w, geo)
        if part in ("weight_grad", "all"):
            dw._weight_grad(dy, x, geo)
        torch.cuda.synchronize()
    elif step == "load":
        from scaling import depthwise as dw
        dw.load_kernels("cuda")
    elif step == "wait":
        sys.stdin.readline()
    said(step)
"""

PARTS = ("forward", "input_grad", "weight_grad")


def spawn(steps: list[str], env: dict, stdin=None) -> subprocess.Popen:
    t0 = time.time()
    p = subprocess.Popen([sys.executable, "-c", CHILD, ",".join(steps)], env=dict(env, PROBE_T0=repr(t0)),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=stdin)
    p.t0 = t0
    return p


def finish(p: subprocess.Popen) -> dict:
    out, err = p.communicate()
    times = {}
    for line in out.splitlines():
        name, _, seconds = line.rpartition(" ")
        times[name] = float(seconds)
    times["exited"] = round(time.time() - p.t0, 3)  # after its last step: the process's end (CUDA's teardown)
    if p.returncode:
        times["error"] = (err.strip().splitlines() or ["?"])[-1][-300:]
    return times


def run(steps: list[str], env: dict) -> dict:
    return finish(spawn(steps, env))


def fresh_cache(root: Path, env: dict, name: str) -> dict:
    d = root / name
    d.mkdir(parents=True)
    return dict(env, TRITON_CACHE_DIR=str(d))


def kernel_steps(ways: int) -> list[list[str]]:
    from scaling.depthwise import KERNEL_SHAPES

    if ways == 4:
        return [["torch", "cuda", f"kernel:{k}:{s}:all"] for k, s in KERNEL_SHAPES]
    return [["torch", "cuda", f"kernel:{k}:{s}:{part}"] for k, s in KERNEL_SHAPES for part in PARTS]


def compile_ways(ways: int, env: dict) -> dict:
    t0 = time.time()
    procs = [spawn(s, env) for s in kernel_steps(ways)]
    ends = [finish(p) for p in procs]
    return {"wall_s": round(time.time() - t0, 3), "processes": ends}


def together(ways: int, env: dict, root: Path) -> dict:
    from scaling import mps

    t0 = time.time()
    compiles = [spawn(s, env) for s in kernel_steps(ways)]
    control = mps.control_binary()
    daemon = mps.start(control, root / f"mps-log-{ways}") if control else None
    t_daemon = round(time.time() - t0, 3)
    wenv = dict(env, **daemon.env()) if daemon else env
    workers = [spawn(["torch", "cli", "cuda", "dynamo"], wenv) for _ in range(4)]
    out = {"daemon_up_s": t_daemon, "compiles": [finish(p) for p in compiles]}
    out["compile_wall_s"] = round(time.time() - t0, 3)
    out["workers"] = [finish(p) for p in workers]
    out["workers_wall_s"] = round(time.time() - t0, 3)
    if daemon:
        mps.stop(control, daemon)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="start-probe-"))
    env = dict(os.environ, PROBE_STUDIES=str(root / "studies"), CUDA_MPS_PIPE_DIRECTORY=str(root / "no-mps"))
    found: dict = {}
    steps = ["torch", "cli", "device_count", "triton", "capability", "cuda", "dynamo"]
    found["steps, first"] = run(steps, fresh_cache(root, env, "c0"))
    found["steps, again"] = run(steps, fresh_cache(root, env, "c1"))
    found["search to its launch (python, cli, prepare_study)"] = run(["cli", "prepare", "triton", "capability"],
                                                                    fresh_cache(root, env, "c2"))
    from scaling.depthwise import KERNEL_SHAPES

    one = ["torch", "cuda"] + [f"kernel:{k}:{s}:{part}" for k, s in KERNEL_SHAPES for part in PARTS]
    found["compile in one process"] = run(one, fresh_cache(root, env, "c3"))
    found["compile 4 ways"] = compile_ways(4, fresh_cache(root, env, "c4"))
    found["compile 12 ways"] = compile_ways(12, fresh_cache(root, env, "c5"))
    found["load from the cache"] = run(["torch", "cuda", "load"], dict(env, TRITON_CACHE_DIR=str(root / "c5")))
    found["together, 4 ways"] = together(4, fresh_cache(root, env, "c6"), root)
    found["together, 12 ways"] = together(12, fresh_cache(root, env, "c7"), root)
    text = json.dumps(found, indent=1)
    print(text)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "start-probe.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
