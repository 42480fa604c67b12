"""Benchmark: the one data cache per source and the batches cut on the device, in one run.

Sections, each on CIFAR-10 (the archive given) and on a generated folder of 2,000 JPEGs of
500 x 375 px:
  build     building the one cache in an empty folder (target <= 15 s for CIFAR-10 on the GPU machine);
  start     starting a trial at a resolution not seen before: load_data from the cache as a
            new worker process would (checksums checked), the Batches on the device and
            the first batch (target <= 1 s of data time);
  epoch     `scaling.train.train` end to end (data on the device, crops and resizes per
            batch) against the synthetic-input step (bench/train_bench.py's, with the
            data's classes) with the same network, optimizer, batch and resolution:
            CIFAR-10 at 128 px, the folder at 224 px, eager and with CUDA graphs (target
            >= 0.95x);
  resize    the two batched resize methods of scaling.data.batches (roi_align and
            grid_sample) for the same batches, so the default can be re-measured on a GPU.

    python bench/data_bench.py /path/cifar10-jpeg.tar.gz --out results/            # GPU: B0, full sizes
    python bench/data_bench.py /path/cifar10-jpeg.tar.gz --out results/ --quick    # CPU check: small sizes

It prints a table last and writes data_bench.json to --out. Needs only what the project
needs (torch, torchvision, Pillow, numpy, rich; filelock comes with torch); the caches go
to a temporary folder, so platformdirs is not used.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FULL = dict(net="efficientnet-b0", cifar_res=128, cifar_batch=512, cifar_epochs=2, cifar_train=None, cifar_val=None,
            folder_images=2000, folder_val=200, folder_res=224, folder_batch=256, folder_epochs=6, new_res=160)
QUICK = dict(net="tiny", cifar_res=64, cifar_batch=64, cifar_epochs=1, cifar_train=1024, cifar_val=256,
             folder_images=200, folder_val=40, folder_res=64, folder_batch=32, folder_epochs=1, new_res=48)


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _spec(name: str, res: int, classes: int):
    from scaling.spec import custom_spec, spec_for

    spec = spec_for("efficientnet-b0") if name == "efficientnet-b0" else custom_spec(0.25, 0.25, res)
    return spec.replace(resolution=res, num_classes=classes)


def synthetic_speed(spec, res: int, batch: int, dev: torch.device, graph: bool) -> dict:
    """Images per second of the training step on synthetic input: bench/train_bench.py's step
    (bf16 autocast, channels_last, the proxy recipe's SGD; the CUDA-graph step with ``graph``),
    with the data's classes, timed over 40 steps after 15 (2 and 4 on the CPU)."""
    from scaling.model import EfficientNet
    from scaling.recipe import Recipe
    from scaling.step import GraphStep
    from scaling.train import compute_loss, make_optimizer

    cuda = dev.type == "cuda"
    torch.manual_seed(0)
    model = EfficientNet(spec).to(dev).train()
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    recipe = Recipe(batch_size=batch)
    lr_t = torch.tensor(recipe.peak_lr(), device=dev) if graph else None
    opt = make_optimizer(model, recipe, lr_t)
    x = torch.randn(batch, 3, res, res, device=dev).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, spec.num_classes, (batch,), device=dev)
    loss_fn = lambda o, t: compute_loss(o, t, recipe.label_smoothing)  # noqa: E731
    graphed = GraphStep(model, opt, lr_t, loss_fn, x, y, amp=cuda) if graph else None

    def one():
        if graphed is not None:
            graphed(x, y, recipe.peak_lr())
            return
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cuda):
            loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()

    warmup, steps = (15, 40) if cuda else (2, 4)
    for _ in range(warmup):
        one()
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        one()
    _sync(dev)
    ips = batch * steps / (time.perf_counter() - t0)
    if graphed is not None:
        graphed.release()
    del model, opt, graphed
    if cuda:
        torch.cuda.empty_cache()
    return dict(images_per_second=ips)


def end_to_end(spec, data, batch: int, epochs: int, dev: torch.device, graph: bool) -> dict:
    from scaling.recipe import Recipe
    from scaling.train import train

    t0 = time.perf_counter()
    res = train(spec, data, Recipe(epochs=epochs, batch_size=batch), device=dev, quiet=True,
                cuda_graphs=graph if dev.type == "cuda" else None)
    return dict(images_per_second=res.images_per_second, wall_s=time.perf_counter() - t0, times=res.times,
                status=res.status, top1=res.top1, notes=res.notes)


def start_trial(source, res: int, cache_dir: Path, batch: int, dev: torch.device, **kw) -> dict:
    """Data time of a trial at a resolution not used before: as a fresh worker sees it."""
    from scaling.data import Batches, cache, load_data

    cache._verified.clear()  # a new process checks the checksums again
    t0 = time.perf_counter()
    ds = load_data(source, res, cache_dir=cache_dir, quiet=True, **kw)
    t_load = time.perf_counter() - t0
    tb = Batches(ds.train, batch, train=True, device=dev, dtype=torch.bfloat16 if dev.type == "cuda" else torch.float32)
    vb = Batches(ds.val, min(batch, 1024), train=False, device=dev)
    x, _ = next(iter(tb))
    _sync(dev)
    total = time.perf_counter() - t0
    assert x.shape[-1] == res
    del tb, vb
    return dict(load_s=t_load, data_s=total, resolution=res)


def resize_speed(dev: torch.device, batch: int, side: int, res: int, reps: int) -> dict:
    """Milliseconds per batch of each resize method, random crops from ``side`` to ``res``."""
    from scaling.data import Batches, Split

    images = torch.randint(0, 256, (batch * 2, 3, side, side), dtype=torch.uint8)
    split = Split(images, torch.arange(batch * 2) % 10, [str(i) for i in range(10)], "r").at(res)
    out = {}
    for method in ("roi", "grid"):
        b = Batches(split, batch, train=True, device=dev, resize=method)
        it = iter(b)
        next(it)
        _sync(dev)
        t0 = time.perf_counter()
        n = 0
        for _ in range(reps):
            for _x, _ in b:
                n += 1
        _sync(dev)
        out[method] = 1000 * (time.perf_counter() - t0) / n
    return out


def _jpeg(args) -> None:
    path, seed, cls = args
    from PIL import Image

    rng = np.random.default_rng(seed)
    low = rng.uniform(0, 255, (6, 8, 3))
    img = np.asarray(Image.fromarray(low.astype(np.uint8)).resize((500, 375), Image.Resampling.BICUBIC), np.float32)
    yy, xx = np.mgrid[0:375, 0:500]
    img += 40 * np.sin((xx * np.cos(cls) + yy * np.sin(cls)) * (0.05 + 0.02 * cls))[..., None]
    img += rng.normal(0, 8, img.shape)
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, quality=90)


def make_folder(root: Path, n_train: int, n_val: int, classes: int = 10) -> Path:
    """An ImageFolder of 500 x 375 JPEGs (smooth colour, a grating per class, noise)."""
    jobs = []
    for split, n in (("train", n_train), ("val", n_val)):
        for i in range(n):
            c = i % classes
            folder = root / split / f"c{c}"
            folder.mkdir(parents=True, exist_ok=True)
            jobs.append((folder / f"{i:05d}.jpg", hash((split, i)) & 0xFFFFFFFF, c))
    with cf.ProcessPoolExecutor(min(16, os.cpu_count() or 1)) as pool:
        list(pool.map(_jpeg, jobs, chunksize=32))
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cifar", type=Path, help="CIFAR-10 as an ImageFolder archive (cifar10-jpeg.tar.gz)")
    ap.add_argument("--out", type=Path, default=Path("bench-results"))
    ap.add_argument("--quick", action="store_true", help="small sizes and a small network (a CPU check)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--no-graphs", action="store_true", help="eager steps only (default on a GPU: both)")
    args = ap.parse_args()
    from scaling.data import load_data
    from scaling.train import resolve_device

    cfg = QUICK if args.quick else FULL
    dev = resolve_device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict = dict(device=torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
                        torch=torch.__version__, date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                        quick=args.quick, config=cfg, cpus=len(os.sched_getaffinity(0)))
    import torchvision

    report["torchvision"] = torchvision.__version__
    rows: list[tuple[str, str, str, str]] = []  # what, figure, target, met

    def save() -> None:
        report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        (args.out / "data_bench.json").write_text(json.dumps(report, indent=2, default=str))

    graphs = [False] if dev.type != "cuda" or args.no_graphs else [False, True]
    with tempfile.TemporaryDirectory(prefix="data-bench-") as tmp:
        tmp = Path(tmp)
        cases = [("cifar10", args.cifar, cfg["cifar_res"], cfg["cifar_batch"], cfg["cifar_epochs"],
                  dict(train_size=cfg["cifar_train"], val_size=cfg["cifar_val"]))]
        t0 = time.perf_counter()
        folder = make_folder(tmp / "jpegs500x375", cfg["folder_images"], cfg["folder_val"])
        report["folder_generated_s"] = time.perf_counter() - t0
        cases.append(("jpeg500x375", folder, cfg["folder_res"], cfg["folder_batch"], cfg["folder_epochs"], {}))
        for name, source, res, batch, epochs, kw in cases:
            r = report[name] = {}
            cache_dir = tmp / f"cache-{name}"
            t0 = time.perf_counter()
            data = load_data(source, res, cache_dir=cache_dir, quiet=True, **kw)
            r["build_s"] = time.perf_counter() - t0
            r["cache_mb"] = sum(p.stat().st_size for p in cache_dir.iterdir()) / 1e6
            r["stored_sides"] = data.train.sides
            r["images"] = [len(data.train), len(data.val)]
            rows.append((f"{name}: build the one cache ({r['cache_mb']:.0f} MB)", f"{r['build_s']:.1f} s",
                         "<= 15 s" if name == "cifar10" else "", _met(r["build_s"] <= 15) if name == "cifar10" else ""))
            save()
            print(f"{name}: cache built in {r['build_s']:.1f} s, {r['cache_mb']:.0f} MB, stored at {r['stored_sides']}",
                  flush=True)
            new_res = cfg["new_res"] if name == "cifar10" else res - 32
            r["start"] = start_trial(source, new_res, cache_dir, batch, dev, **kw)
            rows.append((f"{name}: start a trial at {new_res} px (data time)", f"{r['start']['data_s']:.2f} s",
                         "<= 1 s", _met(r["start"]["data_s"] <= 1)))
            save()
            print(f"{name}: a trial at {new_res} px starts with {r['start']['data_s']:.2f} s of data time", flush=True)
            spec = _spec(cfg["net"], res, data.num_classes)
            for graph in graphs:
                key = "graphs" if graph else "eager"
                synth = synthetic_speed(spec, res, batch, dev, graph)
                e2e = end_to_end(spec, data, batch, epochs, dev, graph)
                ratio = e2e["images_per_second"] / synth["images_per_second"]
                r[f"epoch_{key}"] = dict(synthetic=synth, end_to_end=e2e, ratio=ratio)
                rows.append((f"{name}: epoch at {res} px / {batch}, {key}, vs synthetic",
                             f"{e2e['images_per_second']:.0f} / {synth['images_per_second']:.0f} img/s = {ratio:.3f}x",
                             ">= 0.95x", _met(ratio >= 0.95)))
                save()
                print(f"{name}: epoch {key} {e2e['images_per_second']:.0f} img/s vs synthetic "
                      f"{synth['images_per_second']:.0f} ({ratio:.3f}x); times {e2e['times']}", flush=True)
            del data
        reps = 1 if args.quick else 5
        for side, res, batch in ((32, cfg["cifar_res"], cfg["cifar_batch"]), (256, cfg["folder_res"], cfg["folder_batch"])):
            ms = resize_speed(dev, batch, side, res, reps)
            report.setdefault("resize_ms", []).append(dict(side=side, resolution=res, batch=batch, **ms))
            rows.append((f"resize {side} -> {res} px, batch {batch}: roi / grid",
                         f"{ms['roi']:.2f} / {ms['grid']:.2f} ms", "", ""))
            save()
    save()
    width = max(len(w) for w, *_ in rows)
    print(f"\ndata bench on {report['device']} ({report['date']}{', quick' if args.quick else ''}):")
    for what, fig, target, met in rows:
        print(f"  {what:<{width}}  {fig:>30}  {target:>8}  {met}")
    print(f"wrote {args.out / 'data_bench.json'}")


def _met(ok: bool) -> str:
    return "met" if ok else "MISSED"


if __name__ == "__main__":
    main()
