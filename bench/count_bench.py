"""Benchmark: counting a grid of networks, our cached fast path against plain fvcore.

Counts at least 100 distinct networks at up to 260 pixels (the phi=1 grids of B0 at
base resolutions 160 and 168), first with `scaling.complexity.count_many` from an empty
disk cache, then with plain fvcore (build, trace, FlopCountAnalysis and
ActivationCountAnalysis) on each, in the same process, and checks the numbers are equal.

    python bench/count_bench.py [--limit N]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time

import torch


def networks():
    from scaling.compound import candidates
    from scaling.spec import spec_for

    seen, out = set(), []
    for base_res in (160, 168):
        for c in candidates(1.0, base=spec_for("efficientnet-b0", resolution=base_res), flops_tolerance=None):
            key = c.spec.architecture()
            if key not in seen and c.spec.resolution <= 260:
                seen.add(key)
                out.append(c.spec)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=0, help="count only the first N networks")
    args = ap.parse_args()
    specs = networks()
    if args.limit:
        specs = specs[: args.limit]
    torch.set_num_threads(torch.get_num_threads())

    t0 = time.perf_counter()
    from scaling.complexity import CountCache, count_many, count_traced

    with tempfile.TemporaryDirectory() as d:
        fast = count_many(specs, CountCache(d))
        t_fast = time.perf_counter() - t0
        t1 = time.perf_counter()
        again = count_many(specs, CountCache(d))
        t_cached = time.perf_counter() - t1

    t2 = time.perf_counter()
    plain = [count_traced(s) for s in specs]
    t_plain = time.perf_counter() - t2

    same = fast == plain == again
    cpu = platform.processor() or platform.machine()
    print(f"networks: {len(specs)} distinct, resolutions {min(s.resolution for s in specs)}-"
          f"{max(s.resolution for s in specs)} px; CPU threads {torch.get_num_threads()} ({cpu})")
    print(f"scaling count_many, empty cache (imports included): {t_fast:.2f} s "
          f"({1000 * t_fast / len(specs):.1f} ms per network)")
    print(f"scaling count_many, warm disk cache:                {t_cached:.3f} s")
    print(f"plain fvcore, traced:                               {t_plain:.1f} s "
          f"({t_plain / len(specs):.2f} s per network)")
    print(f"identical counts (FLOPs, params, activations): {same}; speed-up {t_plain / t_fast:.0f}x")
    if not same:
        raise SystemExit("counts differ")


if __name__ == "__main__":
    main()
