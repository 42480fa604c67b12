"""Benchmark: FLOPs are not time (issue 15). B0..B3 against ResNet-50, counted and timed in one run.

EfficientNet-B3 has under half of ResNet-50's FLOPs, yet it is widely reported to infer
about twice as slowly on GPUs (depthwise convolutions make it bound by memory traffic).
In one process, on one device, for each network at its native resolution (224, 240, 260,
300 px for B0..B3, 224 for ResNet-50): FLOPs (multiply-adds at batch 1, our count: the
analytic one for our EfficientNets, an fvcore trace restricted to convolutions, linear
layers and matrix products for the others), activations, parameters, latency at batch 1
and throughput at --batch, measured by `scaling.speed.model_speed` (what every trained
member records: eval, inference mode, bf16 autocast and channels_last on a GPU, fp32 on
the CPU; warm-up, then the median of the repeats, timed with CUDA events on a GPU).

Networks: ours, B0..B3 (`scaling.spec.spec_for`) and ResNet-50 (the base interface,
`get_base("resnet50")`); peers, torchvision's resnet50 and efficientnet_b0..b3, and timm's
efficientnet_b0..b3 where timm imports. Writes --out (JSON: every row, the device and the
software) and prints a markdown table, the fits of log latency against log FLOPs and log
activations over the networks (`scaling.latency`), and whether "B3 has under half of
ResNet-50's FLOPs yet infers slower" holds here.

    python bench/latency_bench.py --out docs/bench-results/latency-bench.json          # a GPU: bf16, batch 256
    python bench/latency_bench.py --device cpu --batch 8 --repeats 2 --out /tmp/l.json  # a CPU smoke check
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

OURS_EFFICIENTNETS = ("efficientnet-b0", "efficientnet-b1", "efficientnet-b2", "efficientnet-b3")
NATIVE = {"b0": 224, "b1": 240, "b2": 260, "b3": 300}


def _traced_count(model: torch.nn.Module, resolution: int) -> dict:
    """FLOPs and activations of a peer's network as we count ours (scaling.complexity.flop_analysis)."""
    from fvcore.nn import ActivationCountAnalysis

    from scaling.complexity import flop_analysis

    model = model.eval()
    x = torch.zeros(1, 3, resolution, resolution)
    with torch.no_grad():
        flops = int(flop_analysis(model, x).total())
        acts = ActivationCountAnalysis(model, x)
        acts.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
        activations = int(acts.total())
    return {"flops": flops, "activations": activations, "params": sum(p.numel() for p in model.parameters())}


def networks(peers: bool = True):
    """(name, source, resolution, build, count) of every network: ours first, then the peers found."""
    from scaling.bases import build, count, get_base
    from scaling.spec import spec_for

    out = []
    for name in OURS_EFFICIENTNETS:
        spec = spec_for(name)
        out.append((name, "scaling", spec.resolution, lambda s=spec: build(s), lambda s=spec: count(s).to_dict()))
    r50 = get_base("resnet50").spec(resolution=224)
    out.append(("resnet50", "scaling", 224, lambda: build(r50), lambda: count(r50).to_dict()))
    if not peers:
        return out
    import torchvision.models as tvm

    out.append(("resnet50", "torchvision", 224, lambda: tvm.resnet50(), None))
    for k in NATIVE:
        out.append((f"efficientnet_{k}", "torchvision", NATIVE[k], getattr(tvm, f"efficientnet_{k}"), None))
    try:
        import timm
    except ImportError:
        return out
    for k in NATIVE:
        out.append((f"efficientnet_{k}", f"timm {timm.__version__}", NATIVE[k],
                    lambda k=k: timm.create_model(f"efficientnet_{k}", pretrained=False), None))
    return out


def fit_line(rows) -> str:
    from scaling.latency import fit_latency

    fits = fit_latency([r["flops"] for r in rows], [r["activations"] for r in rows], [r["latency_ms"] for r in rows])
    if not fits.ok:
        return fits.sentence()
    return (f"log latency ~ log FLOPs: slope {fits.flops.slope:.3f}, error {fits.flops.pct:.1f}%; "
            f"~ log activations: slope {fits.activations.slope:.3f}, error {fits.activations.pct:.1f}%: "
            f"{fits.sentence()} ({fits.n} distinct points: networks of equal counts are one, their latencies' "
            "geometric mean)")


def claim(rows) -> str:
    """Whether "B3 has under half of ResNet-50's FLOPs yet infers slower" holds, from our own two networks."""
    ours = {r["network"]: r for r in rows if r["source"] == "scaling"}
    b3, r50 = ours.get("efficientnet-b3"), ours.get("resnet50")
    if b3 is None or r50 is None:
        return "claim: not measured (B3 or ResNet-50 missing)"
    f = b3["flops"] / r50["flops"]
    lat = b3["latency_ms"] / r50["latency_ms"]
    thr = b3["throughput"] / r50["throughput"]
    holds = f < 0.5 and lat > 1 and thr < 1
    return (f"claim \"B3 has under half of ResNet-50's FLOPs yet infers slower\": "
            f"{'HOLDS' if holds else 'does NOT hold'} here: B3/ResNet-50 FLOPs {f:.2f}x, batch-1 latency {lat:.2f}x, "
            f"throughput {thr:.2f}x (ours, {b3['precision']} on {b3['device']})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("latency-bench.json"), help="the JSON file to write")
    ap.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    ap.add_argument("--batch", type=int, default=256, help="throughput batch (default 256)")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats at batch 1 (default 30 GPU, 5 CPU)")
    ap.add_argument("--no-peers", action="store_true", help="ours only (no torchvision, no timm)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads on the CPU")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from scaling.speed import model_speed
    from scaling.train import _device_name, resolve_device

    dev = resolve_device(args.device)
    cuda = dev.type == "cuda"
    where = {"device": _device_name(dev), "precision": "bf16" if cuda else "fp32"}
    rows = []
    for name, source, res, make, counter in networks(not args.no_peers):
        t0 = time.perf_counter()
        torch.manual_seed(0)
        model = make()
        counts = counter() if counter is not None else _traced_count(model, res)
        speed = model_speed(model, 3, res, dev, batch=args.batch, repeats=args.repeats)
        del model
        row = {"network": name, "source": source, "resolution": res, **counts, **speed, **where,
               "seconds": round(time.perf_counter() - t0, 1)}
        rows.append(row)
        print(f"  {source} {name} {res} px: {speed['latency_ms']:.2f} ms, {speed['throughput']:,.0f} img/s "
              f"({row['seconds']} s)", flush=True)

    print()
    print(f"| network | source | res | params M | GFLOPs | activations M | latency ms (batch 1) | "
          f"img/s (batch {args.batch}) |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['network']} | {r['source']} | {r['resolution']} | {r['params'] / 1e6:.2f} | "
              f"{r['flops'] / 1e9:.3f} | {r['activations'] / 1e6:.2f} | {r['latency_ms']:.3f} | "
              f"{r['throughput']:,.0f} |")
    print()
    ours = [r for r in rows if r["source"] == "scaling"]
    lines = [f"ours: {fit_line(ours)}", f"all: {fit_line(rows)}", claim(rows)]
    for line in lines:
        print(line)
    software = {"python": platform.python_version(), "torch": torch.__version__,
                "cuda": torch.version.cuda if cuda else None,
                "cudnn": torch.backends.cudnn.version() if cuda else None, "threads": torch.get_num_threads(),
                "machine": platform.processor() or platform.machine()}
    try:
        import torchvision

        software["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), **where, "batch": args.batch,
                                    "repeats": args.repeats, "software": software, "rows": rows,
                                    "summary": lines}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
