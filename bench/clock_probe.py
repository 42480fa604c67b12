"""How long a GPU timing must warm up: one network's graph-timed speed after the GPU idled,
for several warm-up lengths, against the same timed right after a burst of work.

    python bench/clock_probe.py --out $OUT/clock

In one process, B0 at 80 px (10 classes: a network of the GPU study's grid, about 1 ms at
batch 1 on an H200) is made ready once (:func:`scaling.speed.ready`: its graphs captured).
Then, ``--rounds`` times, for each warm-up length: ``--idle`` seconds of nothing, the SM
clock read (nvidia-smi), :meth:`scaling.speed.Timing.time` with that warm-up, the clock read
again. Last, a second of matrix products and at once a timing with no warm-up beyond 3 runs
("hot"). Prints and writes each measurement with the clocks around it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

import torch


def sm_clock() -> int | None:
    r = subprocess.run(["nvidia-smi", "--query-gpu=clocks.sm", "--format=csv,noheader,nounits", "--id=0"],
                       capture_output=True, text=True)
    return int(r.stdout.strip()) if r.stdout.strip().isdigit() else None


def main() -> None:
    from scaling.spec import spec_for
    from scaling.speed import ready

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--idle", type=float, default=2.0)
    ap.add_argument("--warmups", default="0,0.05,0.25,1.0")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    dev = torch.device("cuda:0")
    spec = spec_for("efficientnet-b0").replace(resolution=80, num_classes=10)
    rows = []
    with ready(spec, dev) as timing:
        for r in range(args.rounds):
            for w in (float(v) for v in args.warmups.split(",")):
                time.sleep(args.idle)
                before = sm_clock()
                s = timing.time(warmup_s=w)
                rows.append({"round": r, "warmup_s": w, "clock_before": before, "clock_after": sm_clock(),
                             "latency_ms": s["latency_ms"], "throughput": s["throughput"]})
                print(rows[-1], flush=True)
        a = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
        end = time.perf_counter() + 1.0
        while time.perf_counter() < end:
            a @ a
            torch.cuda.synchronize(dev)
        before = sm_clock()
        s = timing.time(warmup_s=0.0)
        rows.append({"round": "hot", "warmup_s": 0.0, "clock_before": before, "clock_after": sm_clock(),
                     "latency_ms": s["latency_ms"], "throughput": s["throughput"]})
        print(rows[-1], flush=True)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "clock-probe.json").write_text(json.dumps({"device": torch.cuda.get_device_name(dev),
                                                                     "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
