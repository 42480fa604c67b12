"""The Triton depthwise kernels (scaling.depthwise) against cuDNN's, on a GPU.

    python bench/depthwise_bench.py --out DIR [--data cifar10-jpeg.tar.gz] [--parts check,compile,...]

Parts (each writes DIR/depthwise-PART.json and prints a table):
  check    outputs and both gradients against cuDNN's in bf16, channels-last, odd shapes included
  compile  the kernels' first calls in a fresh Triton cache, then in a new process reading it
  sweep    block sizes and warps of each kernel on B0's layers at 56 px, batch 512 (then uses the best)
  layers   every depthwise layer of B0 at 56 px (batch 512) and of B0 at 128 px (batch 256):
           the first call at a new shape and the steady forward + backward, both paths,
           steady times from CUDA graphs (as the trainer runs them)
  train    B0 at 56 px, then (1.2, 1.1, 1.15)'s network at 64 px, 10 epochs each in one process
           on CIFAR-10 with the GPU study's recipe, with the Triton kernels and without: each
           network's warm-up, training time, images/s and top-1
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

PARTS = ("check", "compile", "sweep", "layers", "train")


def _pads(h: int, k: int, s: int) -> tuple[int, int, int, int]:
    from scaling.model import same_padding

    top, bottom = same_padding(h, k, s)
    return top, bottom, top, bottom  # square: (left, right, top, bottom)


def b0_layers(resolution: int, batch: int) -> list[tuple]:
    """(N, C, H, K, S) of each distinct depthwise layer of B0 at ``resolution``."""
    from scaling.model import EfficientNet
    from scaling.spec import custom_spec

    net = EfficientNet(custom_spec(1.0, 1.0, resolution, num_classes=10))
    seen, out = set(), []
    sizes = {}

    def hook(m, inp, _out):
        sizes[m] = inp[0].shape[-1]

    import torch

    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    handles = [m.register_forward_hook(hook) for m in convs]
    with torch.no_grad():
        net.eval()(torch.zeros(1, 3, resolution, resolution))
    for h in handles:
        h.remove()
    for m in convs:
        key = (batch, m.in_channels, sizes[m], m.kernel_size[0], m.stride[0])
        if key not in seen:
            seen.add(key)
            out.append(key)
    return out


def _tensors(n, c, h, k, dtype, seed=0):
    import torch

    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(n, c, h, h, device="cuda", dtype=dtype, generator=g).to(memory_format=torch.channels_last)
    w = torch.randn(c, 1, k, k, device="cuda", dtype=dtype, generator=g) / k
    return x.requires_grad_(True), w.requires_grad_(True)


def _fwd_bwd(path: str, x, w, s, pads):
    import torch.nn.functional as F

    from scaling import depthwise as D

    def run():
        x.grad = w.grad = None
        if path == "triton":
            y = D.depthwise_conv2d(x, w, s, pads)
        elif pads[0] == pads[1]:
            y = F.conv2d(x, w, stride=s, padding=pads[2], groups=x.shape[1])
        else:
            y = F.conv2d(F.pad(x, pads), w, stride=s, groups=x.shape[1])
        y.backward(y.detach())  # a gradient of y's own shape and layout, no extra kernel
    return run


def graph_time(fn, reps: int = 20) -> float:
    """Seconds per call of ``fn`` replayed from one CUDA graph of ``reps`` calls."""
    import torch

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(reps):
            fn()
    g.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(5):
        g.replay()
    end.record()
    torch.cuda.synchronize()
    g.reset()
    return start.elapsed_time(end) / 1000 / (5 * reps)


def first_call(fn) -> float:
    import torch

    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t0


# ---------------------------------------------------------------------------- parts


def part_check() -> list[dict]:
    import torch
    import torch.nn.functional as F

    from scaling import depthwise as D

    rows = []
    shapes = [(8, 32, 28, 3, 1), (8, 96, 28, 3, 2), (8, 144, 14, 5, 2), (4, 240, 7, 5, 1), (4, 480, 4, 3, 2),
              (4, 1152, 2, 5, 1), (3, 40, 17, 3, 2), (2, 24, 9, 5, 2), (5, 56, 13, 3, 1)]
    for n, c, h, k, s in shapes:
        for same in (True, False):
            pads = _pads(h, k, s) if same else (k // 2,) * 4
            x, w = _tensors(n, c, h, k, torch.bfloat16, seed=c)
            out = {}
            for path in ("triton", "cudnn"):
                x.grad = w.grad = None
                y = D.depthwise_conv2d(x, w, s, pads) if path == "triton" else D.reference(x, w, s, pads)
                g = torch.ones_like(y) * 0.01 + y.detach() * 0.1
                y.backward(g)
                out[path] = (y.detach().float(), x.grad.float(), w.grad.float())
            # fp32 on the CPU as the truth: both paths' error against it
            xr, wr = x.detach().float().cpu().requires_grad_(True), w.detach().float().cpu().requires_grad_(True)
            yr = F.conv2d(F.pad(xr, pads), wr, stride=s, groups=c)
            yr.backward((torch.ones_like(yr) * 0.01 + out["cudnn"][0].cpu() * 0.1))
            truth = (yr.detach(), xr.grad, wr.grad)
            row = {"shape": [n, c, h, k, s], "pads": list(pads)}
            for name, i in (("y", 0), ("dx", 1), ("dw", 2)):
                scale = truth[i].abs().max().item() or 1.0
                for path in ("triton", "cudnn"):
                    row[f"{name}_{path}"] = (out[path][i].cpu() - truth[i]).abs().max().item() / scale
            rows.append(row)
            print(" ".join(f"{k}={v:.2e}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    return rows


def part_compile(cache: str, label: str) -> dict:
    """In this process: the first forward + backward of each (K, S) the kernels compile for."""
    import torch

    torch.zeros(1, device="cuda")
    out = {"cache": label}
    for k, s in ((3, 1), (3, 2), (5, 1), (5, 2)):
        x, w = _tensors(8, 64, 16, k, torch.bfloat16)
        out[f"k{k}s{s}"] = round(first_call(_fwd_bwd("triton", x, w, s, _pads(16, k, s))), 3)
    x, w = _tensors(16, 200, 12, 3, torch.bfloat16)  # then a new shape of a compiled (K, S)
    out["new shape k3s1"] = round(first_call(_fwd_bwd("triton", x, w, 1, _pads(12, 3, 1))), 4)
    return out


# (pixels, channels, warps) of each kernel. Measured 2026-12-02 on an H200 too, and slower at
# every choice: the forward and input gradient one pixel at a time with all taps as one tile
# (1.42-2.13 and 2.55-3.58 ms against 0.56 and 0.92 ms), and the weight gradient as tiles of
# pixels read once per tap (2.43-3.27 ms against 1.58 ms): scaling.depthwise keeps the winners.
SWEEP = {
    "forward": [(32, 32, 2), (64, 32, 4), (64, 16, 2), (128, 16, 4), (32, 16, 1)],
    "input_grad": [(32, 32, 2), (64, 32, 4), (64, 16, 2), (128, 16, 4), (32, 16, 1)],
    "weight_grad": [(32, 32, 1), (16, 32, 1), (32, 16, 1), (64, 32, 1), (32, 64, 2), (128, 32, 1)],
}


def apply(config: dict) -> None:
    """Set the kernels' blocks: {kernel: [pixels, channels, warps]}."""
    from scaling import depthwise as D

    for kernel, (p, c, warps) in config.items():
        setattr(D, kernel.upper(), D.Blocks(p, c, warps))


def part_sweep() -> tuple[list[dict], dict]:
    """Every SWEEP choice of each kernel, timed over B0's layers at 56 px; returns the rows and
    the fastest choice of each kernel."""
    import torch

    from scaling import depthwise as D

    layers = b0_layers(56, 512)
    rows, best = [], {}
    for kernel, choices in SWEEP.items():
        for choice in choices:
            apply({kernel: choice})
            total = 0.0
            for n, ch, h, k, s in layers:
                x, w = _tensors(n, ch, h, k, torch.bfloat16)
                geo = D._Geometry(x, k, s, _pads(h, k, s))
                xd, wd = x.detach(), w.detach()
                y = D.reference(xd, wd, s, _pads(h, k, s)).contiguous(memory_format=torch.channels_last)
                fn = {"forward": lambda: D._forward(xd, wd, geo),
                      "input_grad": lambda: D._input_grad(y, wd, geo),
                      "weight_grad": lambda: D._weight_grad(y, xd, geo)}[kernel]
                total += graph_time(fn)
            rows.append({"kernel": kernel, "choice": list(choice), "ms_all_layers": total * 1e3})
            print(f"{kernel:12s} {choice}: {total * 1e3:8.3f} ms over B0's {len(layers)} layers", flush=True)
            if kernel not in best or total < best[kernel][1]:
                best[kernel] = (list(choice), total)
    return rows, {k: v[0] for k, v in best.items()}


def part_layers() -> list[dict]:
    import torch

    rows = []
    for res, batch in ((56, 512), (128, 256)):
        for n, c, h, k, s in b0_layers(res, batch):
            pads = _pads(h, k, s)
            row = {"resolution": res, "shape": [n, c, h, k, s]}
            for path in ("cudnn", "triton"):
                x, w = _tensors(n, c, h, k, torch.bfloat16)
                row[f"first_{path}_s"] = round(first_call(_fwd_bwd(path, x, w, s, pads)), 4)
                row[f"steady_{path}_ms"] = round(graph_time(_fwd_bwd(path, x, w, s, pads)) * 1e3, 4)
            rows.append(row)
            print(row)
    return rows


def train_child(data: str, triton: bool) -> list[dict]:
    from scaling.data import load_data
    from scaling.recipe import Recipe
    from scaling.spec import custom_spec
    from scaling.train import train

    recipe = Recipe(epochs=10, batch_size=512, lr=0.3, weight_decay=5e-4, eval_every=5)
    rows = []
    for width, depth, res in ((1.0, 1.0, 56), (1.1, 1.2, 64)):
        t0 = time.perf_counter()
        ds = load_data(data, res, quiet=True)
        data_s = time.perf_counter() - t0
        r = train(custom_spec(width, depth, res), ds, recipe, device="cuda", seed=0, quiet=True,
                  data_seconds=data_s, triton_depthwise=triton)
        rows.append({"triton": triton, "network": [width, depth, res], "status": r.status, "top1": r.top1,
                     "depthwise": r.depthwise, "images_per_second": r.images_per_second,
                     "times": {k: round(v, 2) for k, v in r.times.items()},
                     "train_share": r.times["train"] / r.times["total"]})
        print(rows[-1], flush=True)
    return rows


def _child(args: list[str], env: dict | None = None) -> dict | list:
    cmd = [sys.executable, __file__, *args]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    sys.stderr.write(out.stderr[-3000:])
    line = [x for x in out.stdout.splitlines() if x.startswith("RESULT ")]
    if not line:
        raise SystemExit(f"child {args} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    return json.loads(line[-1][7:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--data", default=None, help="CIFAR-10 archive, for the train part")
    ap.add_argument("--parts", default=",".join(PARTS))
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--config", default=None, help="a JSON file of blocks per kernel (the sweep's best)")
    args = ap.parse_args()
    if args.config:
        apply(json.loads(Path(args.config).read_text()))
    if args.child:
        kind, _, arg = args.child.partition(":")
        res = part_compile(os.environ["TRITON_CACHE_DIR"], arg) if kind == "compile" else \
            train_child(args.data, arg == "1")
        print("RESULT " + json.dumps(res), flush=True)
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import torch

    import triton

    info = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
            "cudnn": torch.backends.cudnn.version(), "date": time.strftime("%Y-%m-%d")}
    print(info)
    for part in args.parts.split(","):
        t0 = time.perf_counter()
        if part == "compile":
            env = dict(os.environ, TRITON_CACHE_DIR=tempfile.mkdtemp(prefix="triton-cache-"))
            res = [_child(["--out", args.out, "--child", "compile:empty"], env),
                   _child(["--out", args.out, "--child", "compile:filled by the first process"], env)]
            for r in res:
                print(r)
        elif part == "train":
            conf = ["--config", args.config] if args.config else []
            res = [row for t in ("1", "0") for row in _child(["--out", args.out, "--data", args.data, *conf,
                                                              "--child", f"train:{t}"])]
        elif part == "sweep":
            res, best = part_sweep()
            args.config = str(out / "depthwise-best.json")
            Path(args.config).write_text(json.dumps(best))
            apply(best)
            print("best:", best)
        else:
            res = {"check": part_check, "layers": part_layers}[part]()
        (out / f"depthwise-{part}.json").write_text(json.dumps({"info": info, "rows": res}, indent=1))
        print(f"-- {part}: {time.perf_counter() - t0:.1f} s", flush=True)


if __name__ == "__main__":
    main()
