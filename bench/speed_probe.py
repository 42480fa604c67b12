"""Inference speed timed eager against timed from a captured CUDA graph, and what each costs.

    python bench/speed_probe.py --study studies/cifar10.toml --networks 6 --rounds 2 --out DIR

For the study's first ``--networks`` grid networks (at the data's 10 classes), in one
process: :func:`scaling.speed.prepare` (cuDNN's plans, as the speed pass does beside the
workers), then ``--rounds`` rounds of :func:`scaling.speed.inference_speed` timed eager
(``graph=False``) and from a CUDA graph, each with the seconds it took. A graph's times
should agree between rounds (and between processes: run it twice) far closer than eager
ones, whose batch-1 latency is the host's launching. Writes ``speed-probe.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", default="studies/cifar10.toml")
    ap.add_argument("--networks", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--device", default="cuda:0")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)

    import torch

    from scaling.bases import build
    from scaling.search import study_members
    from scaling.speed import default_batch, model_speed, prepare
    from scaling.study import resolve

    dev = torch.device(args.device)
    batch = default_batch(dev)
    specs = [m.spec.replace(num_classes=10) for m in study_members(resolve(args.study))[:args.networks]]
    rows = []
    for spec in specs:
        t = time.perf_counter()
        prepare(spec, dev, batch=batch)
        rows.append({"network": spec.architecture_key(), "resolution": spec.resolution,
                     "prepare_s": round(time.perf_counter() - t, 3), "rounds": []})
    for r in range(args.rounds):
        for spec, row in zip(specs, rows):
            got = {"round": r}
            for mode, graph in (("eager", False), ("graph", True)):
                torch.manual_seed(0)
                t = time.perf_counter()
                s = model_speed(build(spec), spec.in_channels, spec.resolution, dev, batch=batch, graph=graph)
                got[mode] = {"latency_ms": s["latency_ms"], "throughput": s["throughput"],
                             "seconds": round(time.perf_counter() - t, 3)}
            row["rounds"].append(got)
            print(f"{spec.resolution:4d} px r{r}  eager {got['eager']['latency_ms']:8.3f} ms {got['eager']['throughput']:10.1f}/s "
                  f"({got['eager']['seconds']:.2f} s)   graph {got['graph']['latency_ms']:8.3f} ms "
                  f"{got['graph']['throughput']:10.1f}/s ({got['graph']['seconds']:.2f} s)", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    (args.out / "speed-probe.json").write_text(json.dumps({"device": name, "batch": batch, "networks": rows},
                                                          indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
