"""Where a worker's first trial spends the seconds its ``times`` do not name, on a GPU.

    python bench/first_trial_probe.py --data .data/cifar10-jpeg.tar.gz --study studies/cifar10.toml \\
        --runs 3 --epochs 2 --out DIR

In one fresh process, as a search's worker does: the worker's start
(:func:`scaling.worker.start_device`), then ``--runs`` trainings of the study's first grid
networks on its data, each through :func:`scaling.train.train` with the study's recipe cut
to ``--epochs`` epochs. Every piece of ``train`` that is not a step (building the network,
swapping in the Triton kernels, the optimizer, the batches, the step objects, the
evaluation, releasing) is wrapped with a timer that synchronizes the GPU on both sides, so
each run's seconds split into what ``times`` names, what the wrappers name, and what is
left. Writes ``first-trial-probe.json`` under ``--out`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

STARTED = time.perf_counter()

WRAPPED = ("build", "_depthwise_kernels", "make_optimizer", "_make_ema", "_batches", "EagerStep", "HalvingStep",
           "evaluate", "_train_epoch", "gc.collect", "empty_cache")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--study", default="studies/cifar10.toml")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cuda:0", help="cpu: a smoke run (with --train-size)")
    ap.add_argument("--train-size", type=int, default=None, help="fewer training images (a smoke run)")
    args = ap.parse_args(argv)

    import torch

    import scaling.train as T
    from scaling.data import load_data
    from scaling.search import study_members
    from scaling.study import resolve
    from scaling.worker import start_device

    out: dict = {"import_s": round(time.perf_counter() - STARTED, 3)}
    dev = torch.device(args.device)
    cuda = dev.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize(dev)

    t0 = time.perf_counter()
    start_device(dev)
    sync()
    out["start_device_s"] = round(time.perf_counter() - t0, 3)

    spent: dict[str, float] = defaultdict(float)

    def timed(name, fn):
        def wrapper(*a, **k):
            sync()
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                sync()
                spent[name] += time.perf_counter() - t
        return wrapper

    for name in WRAPPED:
        if name == "gc.collect":
            T.gc.collect = timed(name, T.gc.collect)
        elif name == "empty_cache":
            T.torch.cuda.empty_cache = timed(name, torch.cuda.empty_cache)
        else:
            setattr(T, name, timed(name, getattr(T, name)))

    config = resolve(args.study, source=args.data)
    recipe = config.training_recipe()
    recipe = recipe.replace(epochs=args.epochs, eval_every=args.epochs)
    members = study_members(config, 10)
    runs = []
    for i in range(args.runs):
        spec = members[i].spec
        t = time.perf_counter()
        data = load_data(args.data, spec.resolution, quiet=True, seed=0, train_size=args.train_size or config.train_size,
                         val_size=config.val_size)
        data_s = time.perf_counter() - t
        spent.clear()
        t = time.perf_counter()
        result = T.train(spec.replace(num_classes=data.num_classes), data, recipe, device=dev, seed=0, quiet=True,
                         data_seconds=data_s)
        wall = time.perf_counter() - t + data_s
        times = {k: round(v, 3) for k, v in result.times.items()}
        # Outside the phases a trial always had (data, warm-up, training, evaluation): what
        # the probe looks for, and what train() now names as "setup" and "other".
        untimed = result.times["total"] - sum(result.times.get(k, 0.0) for k in ("data", "warmup", "train", "eval"))
        inside_epochs = {k: round(v, 3) for k, v in spent.items()}
        setup = sum(v for k, v in spent.items() if k not in ("_train_epoch", "evaluate", "_batches"))
        runs.append({"run": i, "network": spec.architecture_key(), "resolution": spec.resolution,
                     "status": result.status, "wall_s": round(wall, 3), "times": times,
                     "untimed_s": round(untimed, 3), "wrapped_s": inside_epochs,
                     "setup_wrapped_s": round(setup, 3)})
        print(f"run {i}: {spec.resolution} px  total {times['total']:.2f} s  untimed {untimed:.2f} s  "
              f"setup (wrapped) {setup:.2f} s  " + "  ".join(f"{k} {v:.2f}" for k, v in inside_epochs.items()),
              flush=True)
    out["runs"] = runs
    out["device"] = torch.cuda.get_device_name(dev) if cuda else "cpu"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "first-trial-probe.json").write_text(json.dumps(out, indent=1))
    print(json.dumps({k: v for k, v in out.items() if k != "runs"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
