"""Choose a proxy setting from measurement: train one network under several (resolution,
epochs, recipe) variants, several at once on one GPU, and report top-1 and times.

    python bench/proxy_probe.py --data .data/cifar10-jpeg.tar.gz --at-once 4 --out $OUT \\
        --variant 64:8 --variant 64:8:weight_decay=5e-4 --variant 64:8:weight_decay=5e-4,lr=0.4

A variant is ``RESOLUTION:EPOCHS[:FIELD=VALUE,...]`` with any Recipe field, and ``width=``,
``depth=`` or ``drop_connect=`` for the network (B0: width 1, depth 1). Each variant trains
in its own process; ``--at-once K`` of them share the GPU under an MPS daemon of this
bench's own (``scaling.mps.shared_gpu``), so their speed figures are those of K workers on
one GPU, not of one alone: use this for accuracy, bench/search_bench.py for speed.
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

SPEC_FIELDS = ("width", "depth", "drop_connect", "dropout")


def parse_variant(text: str) -> dict:
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0].isdigit() or not parts[1].isdigit():
        raise argparse.ArgumentTypeError(f"variant must be RESOLUTION:EPOCHS[:FIELD=VALUE,...], got {text!r}")
    out = {"resolution": int(parts[0]), "epochs": int(parts[1]), "recipe": {}, "spec": {}}
    for item in (parts[2].split(",") if len(parts) == 3 and parts[2] else []):
        key, _, value = item.partition("=")
        v = float(value) if any(c in value for c in ".e") else int(value)
        (out["spec"] if key in SPEC_FIELDS else out["recipe"])[key] = v
    out["text"] = text
    return out


def one(variant: dict, data: str, seed: int) -> dict:
    """Train the variant here (the child process)."""
    from scaling.data import load_data
    from scaling.recipe import Recipe
    from scaling.spec import custom_spec
    from scaling.train import train

    t0 = time.perf_counter()
    ds = load_data(data, variant["resolution"], quiet=True)
    data_s = time.perf_counter() - t0
    s = variant["spec"]
    spec = custom_spec(s.get("width", 1.0), s.get("depth", 1.0), variant["resolution"])
    spec = spec.replace(**{k: v for k, v in s.items() if k in ("drop_connect", "dropout")})
    recipe = Recipe(epochs=variant["epochs"], **variant["recipe"])
    r = train(spec, ds, recipe, device="cuda", seed=seed, quiet=True, data_seconds=data_s)
    return {"variant": variant["text"], "seed": seed, "status": r.status, "top1": r.top1, "top5": r.top5,
            "images_per_second": r.images_per_second, "times": {k: round(v, 2) for k, v in r.times.items()},
            "curve": [h["top1"] for h in r.history], "recipe": r.recipe}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--variant", action="append", type=parse_variant, required=True)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--at-once", type=int, default=4)
    ap.add_argument("--out", default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        variant, seed = json.loads(args.child)
        print("RESULT " + json.dumps(one(variant, args.data, seed)), flush=True)
        return
    from scaling import mps

    jobs = [(v, s) for v in args.variant for s in range(args.seeds)]
    rows = []
    with mps.shared_gpu(Path(tempfile.mkdtemp()) / "mps", say=print) as env:
        pending, running = list(jobs), []
        t0 = time.perf_counter()
        while pending or running:
            while pending and len(running) < args.at_once:
                v, s = pending.pop(0)
                cmd = [sys.executable, __file__, "--data", args.data, "--variant", v["text"],
                       "--child", json.dumps([v, s])]
                running.append(subprocess.Popen(cmd, env=dict(os.environ, **env), stdout=subprocess.PIPE, text=True))
            for p in list(running):
                if p.poll() is not None:
                    out = p.stdout.read()
                    running.remove(p)
                    got = [json.loads(line[7:]) for line in out.splitlines() if line.startswith("RESULT ")]
                    rows.extend(got or [{"variant": "?", "status": f"exit {p.returncode}"}])
            time.sleep(0.5)
        wall = time.perf_counter() - t0
    print(f"{len(jobs)} runs, {args.at_once} at once, {wall:.0f} s")
    for r in rows:
        t = r.get("times", {})
        print(f"{r['variant']:<40} seed {r.get('seed')} {r['status']:<4} top-1 {100 * (r.get('top1') or 0):5.2f}%  "
              f"train {t.get('train', 0):6.1f} s  warm-up {t.get('warmup', 0):5.1f} s  eval {t.get('eval', 0):5.1f} s")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "proxy_probe.json").write_text(json.dumps({"wall_s": wall, "runs": rows}, indent=2))


if __name__ == "__main__":
    main()
