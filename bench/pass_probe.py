"""Why the speed pass beside the workers and a fresh process time the same network apart:
one network made ready alone, or while another process loads the GPU, timed alone.

    python bench/pass_probe.py --out $OUT/pass

B0 at 80 px (10 classes, a network of the GPU study's grid), made ready
(:func:`scaling.speed.ready`: eager passes, then the graphs captured) and timed:
- ``alone``: in this process, the GPU to itself (what a fresh process measures);
- ``beside load``: made ready here while a second process keeps the GPU busy (bf16
  convolutions, forward and backward, as a worker trains; no MPS: time-sliced), timed once
  that process has ended;
- ``as the pass``: as the search's speed pass does it: an MPS daemon started
  (:func:`scaling.mps.start`), the load run as its client, a child process outside MPS
  started then, which makes the network ready while the load runs and times it once the
  load has ended and the daemon has stopped; the same child then makes it ready afresh and
  times that too (``as the pass, made again``);
- ``alone again``: in this process once more.
Each one's eager forward pass at batch 1 is profiled for the names of the GPU kernels it
ran, so that a different choice of kernels shows. Writes the timings and kernel lists.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

LOAD = """
import time, torch
x = torch.randn(256, 64, 56, 56, device='cuda', dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
c = torch.nn.Conv2d(64, 64, 3, padding=1).cuda().to(memory_format=torch.channels_last)
print('loading', flush=True)
end = time.time() + {seconds}
while time.time() < end:
    with torch.autocast('cuda', dtype=torch.bfloat16):
        c(x.requires_grad_()).sum().backward()
torch.cuda.synchronize()
"""


def kernels(spec, dev) -> list[str]:
    from scaling.bases import build
    from scaling.speed import _deployed, _forward

    torch.manual_seed(0)
    with _deployed(build(spec), dev) as net:
        step = _forward(net, spec.in_channels, spec.resolution, 1, dev)
        step()
        torch.cuda.synchronize(dev)
        try:
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
                step()
                torch.cuda.synchronize(dev)
        except RuntimeError as e:  # no CUPTI: the timings still say what they say
            return [f"profiler failed: {e}"]
    return [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]


def _measure(what: str, timing, made_s: float, names: list[str]) -> dict:
    s = timing.time()
    row = {"what": what, "made_s": round(made_s, 2), "latency_ms": s["latency_ms"], "throughput": s["throughput"],
           "kernels": len(names), "kernel_names": names}
    print(what, s, f"made in {made_s:.2f} s, {len(names)} kernels", flush=True)
    return row


def _spec():
    from scaling.spec import spec_for

    return spec_for("efficientnet-b0").replace(resolution=80, num_classes=10)


def child() -> None:
    """The speed pass's part: ready now (beside the load), timed on the word; then made again and timed."""
    from scaling.speed import ready

    dev, spec = torch.device("cuda:0"), _spec()
    t0 = time.perf_counter()
    held = ready(spec, dev)
    made = time.perf_counter() - t0
    names = kernels(spec, dev)
    print("ready", flush=True)
    sys.stdin.readline()
    with held:
        rows = [_measure("as the pass", held, made, names)]
    t0 = time.perf_counter()
    with ready(spec, dev) as again:
        rows.append(_measure("as the pass, made again", again, time.perf_counter() - t0, kernels(spec, dev)))
    print("ROWS " + json.dumps(rows), flush=True)


def main() -> None:
    import os

    from scaling import mps
    from scaling.speed import ready

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--load-seconds", type=float, default=10.0)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.child:
        child()
        return
    dev, spec = torch.device("cuda:0"), _spec()
    found: dict = {"device": torch.cuda.get_device_name(dev), "runs": []}
    load_cmd = [sys.executable, "-c", LOAD.format(seconds=args.load_seconds)]

    t0 = time.perf_counter()
    with ready(spec, dev) as t:
        found["runs"].append(_measure("alone", t, time.perf_counter() - t0, kernels(spec, dev)))

    load = subprocess.Popen(load_cmd, stdout=subprocess.PIPE, text=True)
    assert load.stdout.readline().strip() == "loading"
    t0 = time.perf_counter()
    beside = ready(spec, dev)
    made = time.perf_counter() - t0
    names = kernels(spec, dev)
    load.wait()
    with beside:
        found["runs"].append(_measure("beside load", beside, made, names))

    control = mps.control_binary()
    if control is not None:
        import tempfile

        log = Path(tempfile.mkdtemp(prefix="pass-probe-mps-"))
        daemon = mps.start(control, log)
        try:
            load = subprocess.Popen(load_cmd, stdout=subprocess.PIPE, text=True, env=dict(os.environ, **daemon.env()))
            assert load.stdout.readline().strip() == "loading"
            kid = subprocess.Popen([sys.executable, __file__, "--child"], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, text=True,
                                   env=dict(os.environ, CUDA_MPS_PIPE_DIRECTORY=str(log / "no-mps")))
            assert kid.stdout.readline().strip() == "ready"
            load.wait()
        finally:
            mps.stop(control, daemon)
        out, _ = kid.communicate("go\n", timeout=120)
        for line in out.splitlines():
            if line.startswith("ROWS "):
                found["runs"] += json.loads(line[5:])
            else:
                print(line)

    t0 = time.perf_counter()
    with ready(spec, dev) as t:
        found["runs"].append(_measure("alone again", t, time.perf_counter() - t0, kernels(spec, dev)))
    first = found["runs"][0]["kernel_names"]
    for r in found["runs"][1:]:  # the names written once, with the first run
        r["same_kernels_as_alone"] = r.pop("kernel_names") == first
        print(r["what"], "same kernels as alone:", r["same_kernels_as_alone"], flush=True)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "pass-probe.json").write_text(json.dumps(found, indent=2))


if __name__ == "__main__":
    main()
