"""Where a short trial's time goes on a GPU, piece by piece, each configuration in a fresh process.

    python bench/trial_probe.py --out DIR [--configs b0-64,b0-128,w14-144]

For each network and each cudnn autotuning setting (``cudnn.benchmark`` on and off), a
new process times: CUDA start-up, building the network, the first and second eager
training steps, capturing the CUDA graph (scaling.step.GraphStep), 20 replays, and the
first and second evaluation passes over 10,000 images of random pixels at the network's
resolution (the data's decoding is not what this measures). A last part
trains one small network four times in one process and prints the GPU memory allocated
after each run (it must not grow).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

CONFIGS = {  # name: (width, depth, resolution, batch)
    "b0-64": (1.0, 1.0, 64, 256),
    "b0-128": (1.0, 1.0, 128, 512),
    "w14-144": (1.4, 1.0, 144, 256),
}


def _time(fn, sync) -> float:
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def probe(name: str, benchmark: bool, eval_batch: int = 1024) -> dict:
    t_start = time.perf_counter()
    import torch

    from scaling.data import Batches, DataSet, Split
    from scaling.model import EfficientNet
    from scaling.recipe import Recipe
    from scaling.spec import custom_spec
    from scaling.step import GraphStep
    from scaling.train import compute_loss, evaluate, make_optimizer

    width, depth, res, batch = CONFIGS[name]
    dev = torch.device("cuda")
    out = {"config": name, "cudnn_benchmark": benchmark, "eval_batch": eval_batch or batch, "import_s": time.perf_counter() - t_start}
    sync = torch.cuda.synchronize
    out["cuda_init_s"] = _time(lambda: torch.zeros(1, device=dev), sync)
    torch.backends.cudnn.benchmark = benchmark
    g = torch.Generator().manual_seed(0)  # random pixels: the timing does not depend on them

    def split(n: int) -> Split:
        images = torch.randint(0, 256, (n, 3, res, res), dtype=torch.uint8, generator=g)
        return Split(images, torch.arange(n) % 10, [str(c) for c in range(10)], f"random-{n}")

    data = DataSet(split(batch * 8), split(10_000), "random", res)
    spec = custom_spec(width, depth, res, num_classes=10)
    holder = {}

    def build():
        torch.manual_seed(0)
        holder["net"] = EfficientNet(spec).to(dev).to(memory_format=torch.channels_last)

    out["build_s"] = _time(build, sync)
    net = holder["net"]
    recipe = Recipe(batch_size=batch)
    train_b = Batches(data.train, batch, train=True, device=dev, seed=0, dtype=torch.bfloat16)
    val_b = Batches(data.val, eval_batch or batch, train=False, device=dev, seed=0, dtype=torch.bfloat16)
    x, y = next(iter(train_b))
    eager_opt = make_optimizer(net, recipe)

    def eager_step():
        eager_opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = compute_loss(net(x), y, 0.1)
        loss.backward()
        eager_opt.step()

    net.train()
    out["eager_step1_s"] = _time(eager_step, sync)
    out["eager_step2_s"] = _time(eager_step, sync)
    out["eager_step_steady_s"] = _time(lambda: [eager_step() for _ in range(10)], sync) / 10
    lr = torch.tensor(0.1, device=dev)
    opt = make_optimizer(net, recipe, lr)
    out["graph_capture_s"] = _time(
        lambda: holder.__setitem__("g", GraphStep(net, opt, lr, lambda a, b: compute_loss(a, b, 0.1), x, y, True)),
        sync)
    graph = holder["g"]
    out["graph_step_s"] = _time(lambda: [graph(x, y, 0.1) for _ in range(20)], sync) / 20
    out["images_per_s_graph"] = batch / out["graph_step_s"]
    out["eval1_s"] = _time(lambda: evaluate(net, val_b, True), sync)
    out["eval2_s"] = _time(lambda: evaluate(net, val_b, True), sync)
    out["eval_images_per_s"] = 10_000 / out["eval2_s"]
    graph.release()
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items()}


def convs() -> list[dict]:
    """Forward + backward of one convolution, bf16 channels_last, batch 256: the first call
    at a new shape (mean over 4 new channel counts) and the steady time, through cuDNN,
    through torch's own kernels (cuDNN off), and for 1x1 as a matrix product."""
    import torch
    import torch.nn.functional as F

    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = False
    torch.zeros(1, device=dev)
    rows = []

    def run(kind, path, make):
        firsts, steady = [], None
        for k, c in enumerate((40, 48, 56, 64, 72)):  # every channel count a new shape
            fn = make(c)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            if k:
                firsts.append(time.perf_counter() - t0)
            if c == 72:
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                for _ in range(20):
                    fn()
                torch.cuda.synchronize()
                steady = (time.perf_counter() - t0) / 20
        rows.append({"kind": kind, "path": path, "first_s": sum(firsts) / len(firsts), "steady_s": steady})

    def conv(c_in, c_out, k, groups, hw, cudnn=True, as_matmul=False):
        x = torch.randn(256, c_in, hw, hw, device=dev, dtype=torch.bfloat16).to(memory_format=torch.channels_last)
        x.requires_grad_(True)
        w = torch.randn(c_out, c_in // groups, k, k, device=dev, dtype=torch.bfloat16, requires_grad=True)
        w2 = w.detach().view(c_out, c_in).clone().requires_grad_(True) if as_matmul else None

        def fn():
            if as_matmul:  # channels_last: (N, H, W, C) in memory, a 1x1 convolution is x @ W^T
                y = F.linear(x.permute(0, 2, 3, 1), w2).permute(0, 3, 1, 2)
            else:
                with torch.backends.cudnn.flags(enabled=cudnn):
                    y = F.conv2d(x, w, padding=k // 2, groups=groups)
            with torch.backends.cudnn.flags(enabled=cudnn):
                y.float().sum().backward()
        return fn

    for hw in (32, 16):
        run(f"depthwise 3x3 {hw}px", "cudnn", lambda c: conv(6 * c, 6 * c, 3, 6 * c, hw))
        run(f"depthwise 3x3 {hw}px", "torch kernels", lambda c: conv(6 * c, 6 * c, 3, 6 * c, hw, cudnn=False))
        run(f"1x1 {hw}px", "cudnn", lambda c: conv(c, 6 * c, 1, 1, hw))
        run(f"1x1 {hw}px", "torch kernels", lambda c: conv(c, 6 * c, 1, 1, hw, cudnn=False))
        run(f"1x1 {hw}px", "matmul", lambda c: conv(c, 6 * c, 1, 1, hw, as_matmul=True))
    return rows


def threads() -> list[dict]:
    """New depthwise shapes' first forward + backward (cuDNN's plan building), one after
    another and from a pool of threads, and each direction alone: can it run in parallel?"""
    import concurrent.futures as cf

    import torch
    import torch.nn.functional as F

    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = False
    torch.zeros(1, device=dev)
    rows = []

    def first(c: int, hw: int, part: str) -> None:
        x = torch.randn(256, c, hw, hw, device=dev, dtype=torch.bfloat16).to(memory_format=torch.channels_last)
        w = torch.randn(c, 1, 3, 3, device=dev, dtype=torch.bfloat16)
        if part == "forward":
            F.conv2d(x, w, padding=1, groups=c)
        else:
            x.requires_grad_(part in ("both", "input grad"))
            w.requires_grad_(part in ("both", "weight grad"))
            F.conv2d(x, w, padding=1, groups=c).float().sum().backward()
        torch.cuda.synchronize()

    shapes = iter(range(8, 8 + 8 * 200, 8))  # channel counts never used twice: every call a new shape

    def timed(label: str, fn) -> None:
        t0 = time.perf_counter()
        fn()
        rows.append({"what": label, "seconds": round(time.perf_counter() - t0, 3)})
        print(f"{label:<58}{rows[-1]['seconds']:8.3f} s", flush=True)

    for part in ("forward", "input grad", "weight grad", "both"):
        cs = [next(shapes) for _ in range(4)]
        timed(f"4 new shapes, {part}, one after another", lambda: [first(c, 32, part) for c in cs])
    cs = [next(shapes) for _ in range(16)]
    timed("16 new shapes, both, one after another", lambda: [first(c, 32, "both") for c in cs])
    for n in (4, 16):
        cs = [next(shapes) for _ in range(16)]
        with cf.ThreadPoolExecutor(n) as pool:
            timed(f"16 new shapes, both, {n} threads", lambda: list(pool.map(lambda c: first(c, 32, "both"), cs)))
    return rows


def memory() -> list[int]:
    import torch

    from scaling.data import load_data
    from scaling.recipe import Recipe
    from scaling.spec import custom_spec
    from scaling.train import train

    small = load_data(None, 48, train_size=5000, val_size=500, cache_dir=False, quiet=True)
    spec = custom_spec(0.5, 0.5, 64)
    after = []
    for seed in range(4):
        train(spec, small, Recipe(epochs=1, batch_size=128), device="cuda", seed=seed, quiet=True)
        after.append(torch.cuda.memory_allocated())
    return after


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--out", default=None)
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # name:0|1, the child's part
    ap.add_argument("--memory", action="store_true", help="only the memory part, in this process")
    ap.add_argument("--sequence", action="store_true",
                    help="networks one after another in this process, cudnn autotuning off")
    ap.add_argument("--convs", action="store_true",
                    help="first-call and steady cost of B0's convolution kinds, through cuDNN and around it")
    ap.add_argument("--threads", action="store_true", help="cuDNN plans for new depthwise shapes, in threads")
    ap.add_argument("--profile", action="store_true", help="profile the first step of B0 at 128 px")
    ap.add_argument("--tag", default="", help="suffix of the --sequence JSON file")
    args = ap.parse_args()
    if args.one:
        name, bench = args.one.split(":")
        print(json.dumps(probe(name, bench == "1")))
        return
    if args.memory:
        print(json.dumps(memory()))
        return
    if args.profile:  # the first training step of a fresh process, by operator
        import torch
        from torch.profiler import ProfilerActivity, profile

        from scaling.model import EfficientNet
        from scaling.spec import custom_spec

        torch.backends.cudnn.benchmark = False
        net = EfficientNet(custom_spec(1.0, 1.0, 128, num_classes=10)).cuda().to(memory_format=torch.channels_last)
        x = torch.randn(512, 3, 128, 128, device="cuda").to(memory_format=torch.channels_last)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                net(x).float().sum().backward()
            torch.cuda.synchronize()
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
        print(table)
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / "first_step_profile.txt").write_text(table)
        return
    if args.threads:
        rows = threads()
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / "trial_probe_threads.json").write_text(json.dumps(rows, indent=2))
        return
    if args.convs:
        rows = convs()
        for r in rows:
            print(f"{r['kind']:<22}{r['path']:<14} first call {1000 * r['first_s']:8.1f} ms   steady "
                  f"{1000 * r['steady_s']:7.3f} ms")
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / "trial_probe_convs.json").write_text(json.dumps(rows, indent=2))
        return
    if args.sequence:  # one process, one network after another: what a worker pays per new network
        rows = [probe(n, False, e) for n, e in [("b0-64", 1024), ("b0-64", 1024), ("b0-64", 0), ("b0-128", 0),
                                                  ("w14-144", 0), ("b0-128", 1024)]]
        for r in rows:
            print(f"{r['config']:<10} eval batch {r['eval_batch']:>5}: first step {r['eager_step1_s']:.3f} s, "
                  f"capture {r['graph_capture_s']:.3f} s, eval1 {r['eval1_s']:.3f} s, eval2 {r['eval2_s']:.3f} s")
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / f"trial_probe_sequence{args.tag}.json").write_text(json.dumps(rows, indent=2))
        return
    rows = []
    for name in args.configs.split(","):
        for bench in (False, True):
            done = subprocess.run([sys.executable, __file__, "--one", f"{name}:{int(bench)}"], capture_output=True,
                                  text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
            if done.returncode:
                print(done.stderr[-2000:], file=sys.stderr)
                continue
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    mem = subprocess.run([sys.executable, __file__, "--memory"], capture_output=True, text=True)
    allocated = json.loads(mem.stdout.strip().splitlines()[-1]) if mem.returncode == 0 else mem.stderr[-1500:]
    keys = ["cuda_init_s", "build_s", "eager_step1_s", "eager_step2_s", "eager_step_steady_s", "graph_capture_s",
            "graph_step_s", "images_per_s_graph", "eval1_s", "eval2_s", "eval_images_per_s"]
    print(f"{'config':<10}{'bench':>6}" + "".join(f"{k[:14]:>15}" for k in keys))
    for r in rows:
        print(f"{r['config']:<10}{str(r['cudnn_benchmark']):>6}" + "".join(f"{r[k]:>15.3f}" for k in keys))
    print("memory allocated after each of 4 runs:", allocated)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "trial_probe.json").write_text(json.dumps({"rows": rows, "memory": allocated}, indent=2))


if __name__ == "__main__":
    main()
