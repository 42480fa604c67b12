"""Benchmark: training speed of our EfficientNet-B0 against timm and torchvision, on one GPU.

Sections (pick with --only):
  step      a full training step (forward, backward, RMSProp) in bf16 autocast and
            channels_last, synthetic input, at 128 px / batch 512 and 224 px / batch 256,
            for ours, timm's efficientnet_b0 and torchvision's efficientnet_b0;
            optionally ours under torch.compile (--compile) with its compile time.
  data      building the on-disk cache of --data at 128 px in an empty folder, then loading it.
  epoch     one epoch of `scaling.train.train` on --data at 128 px (GPU-resident data and
            augmentation included) against our synthetic-input step with the same optimizer,
            and the GPU's utilization sampled by nvidia-smi meanwhile.
  accuracy  B0 at 128 px with the default proxy recipe for --epochs epochs on --data.

    python bench/train_bench.py --data cifar10-jpeg.tar.gz --out results/ [--only step,data]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F


def _models(which: str):
    """A B0 by name: scaling, timm or torchvision (their defaults), or a variant such as
    ``scaling:padding=symmetric,drop_connect=0`` or ``timm:drop_path_rate=0.2``."""
    which, _, opts = which.partition(":")
    kw = {}
    for item in filter(None, opts.split(",")):
        k, v = item.split("=")
        try:
            kw[k] = float(v)
        except ValueError:
            kw[k] = v
    if which == "scaling":
        from scaling import EfficientNet

        return EfficientNet.from_name("efficientnet-b0", **kw)
    if which == "timm":
        import timm

        return timm.create_model("efficientnet_b0", pretrained=False, **kw)
    import torchvision

    return torchvision.models.efficientnet_b0(weights=None, **kw)


def step_speed(model, res: int, batch: int, optimizer: str = "rmsprop", steps: int = 40, warmup: int = 15,
               compile_model: bool = False, profile: Path | None = None, graph: bool = False) -> dict:
    dev = torch.device("cuda")
    model = model.to(dev).to(memory_format=torch.channels_last).train()
    if graph:
        from scaling.recipe import Recipe
        from scaling.step import GraphStep
        from scaling.train import make_optimizer

        lr_t = torch.tensor(0.2 * batch / 256, device=dev)
        opt = make_optimizer(model, Recipe(batch_size=batch), lr_t)
    elif optimizer == "rmsprop":
        opt = torch.optim.RMSprop(model.parameters(), lr=0.016 * batch / 256, alpha=0.9, eps=1e-3, momentum=0.9,
                                  weight_decay=1e-5)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=0.2 * batch / 256, momentum=0.9, nesterov=True,
                              weight_decay=5e-5)
    x = torch.randn(batch, 3, res, res, device=dev).to(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (batch,), device=dev)
    fwd = torch.compile(model) if compile_model else model
    t_capture = time.perf_counter()
    graphed = GraphStep(model, opt, lr_t, lambda o, t: F.cross_entropy(o.float(), t, label_smoothing=0.1),
                        x, y, amp=True) if graph else None
    t_capture = time.perf_counter() - t_capture

    def one():
        if graphed is not None:
            graphed(x, y, 0.1)
            return
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = F.cross_entropy(fwd(x).float(), y, label_smoothing=0.1)
        loss.backward()
        opt.step()

    torch.cuda.synchronize()
    t0 = time.perf_counter()
    one()
    torch.cuda.synchronize()
    first = time.perf_counter() - t0
    for _ in range(warmup - 1):
        one()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.reset_peak_memory_stats()
    start.record()
    for _ in range(steps):
        one()
    end.record()
    torch.cuda.synchronize()
    ms = start.elapsed_time(end) / steps
    if profile is not None:
        from torch.profiler import ProfilerActivity, profile as torch_profile

        with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                one()
            torch.cuda.synchronize()
        profile.write_text(prof.key_averages().table(sort_by="cuda_time_total", row_limit=30))
    out = dict(images_per_second=batch * 1000 / ms, ms_per_step=ms, first_step_s=first + t_capture,
               peak_memory_mb=torch.cuda.max_memory_allocated() / 2**20)
    del model, opt, fwd, graphed
    torch.cuda.empty_cache()
    return out


class GpuSampler:
    """nvidia-smi's utilization.gpu (share of time a kernel ran), sampled every 100 ms."""

    def __enter__(self):
        self.file = tempfile.NamedTemporaryFile("w+", suffix=".csv")
        try:
            self.proc = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "100",
                 "-i", str(torch.cuda.current_device())], stdout=self.file, stderr=subprocess.DEVNULL)
        except FileNotFoundError:
            self.proc = None
        return self

    def __exit__(self, *exc):
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait()
        self.file.seek(0)
        vals = [float(v) for v in self.file.read().split() if v.strip().replace(".", "").isdigit()]
        self.samples = vals
        self.mean = sum(vals) / len(vals) if vals else None
        self.file.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="ImageFolder folder or archive (CIFAR-10)")
    ap.add_argument("--out", default="bench-results")
    ap.add_argument("--only", default="step,data,epoch,accuracy")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--compile", action="store_true", help="also time ours under torch.compile")
    ap.add_argument("--optimizers", default="sgd,rmsprop", help="optimizers of the step section")
    ap.add_argument("--variants", default="", help="';'-separated models to time at 128/512, e.g. "
                    "'scaling:padding=symmetric;timm:drop_path_rate=0.2'")
    ap.add_argument("--profile", action="store_true", help="write profiler tables of ours and timm at 128/512")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    only = set(args.only.split(","))
    report: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                    "date": time.strftime("%Y-%m-%d")}
    try:
        import timm
        import torchvision

        report["timm"], report["torchvision"] = timm.__version__, torchvision.__version__
    except ImportError:
        pass
    torch.backends.cudnn.benchmark = True

    def save():
        (out / "train_bench.json").write_text(json.dumps(report, indent=2))

    if "step" in only:
        rows = []
        for res, batch in ((128, 512), (224, 256)):
            for opt_name in args.optimizers.split(","):
                for which in ("scaling", "timm", "torchvision"):
                    r = step_speed(_models(which), res, batch, optimizer=opt_name)
                    rows.append(dict(model=which, optimizer=opt_name, res=res, batch=batch, **r))
                    print(f"step {which:12s} {opt_name:8s} {res}px/{batch}: {r['images_per_second']:8.0f} img/s",
                          flush=True)
            r = step_speed(_models("scaling"), res, batch, graph=True)
            rows.append(dict(model="scaling+graph", optimizer="sgd", res=res, batch=batch, **r))
            print(f"step scaling+graph  sgd      {res}px/{batch}: {r['images_per_second']:8.0f} img/s "
                  f"(capture and first step {r['first_step_s']:.1f} s)", flush=True)
            if args.compile:
                r = step_speed(_models("scaling"), res, batch, optimizer="sgd", compile_model=True)
                rows.append(dict(model="scaling+compile", res=res, batch=batch, **r))
                print(f"step scaling+compile {res}px/{batch}: {r['images_per_second']:8.0f} img/s, "
                      f"first step {r['first_step_s']:.1f} s", flush=True)
        report["step"] = rows
        save()

    if args.variants:
        rows = []
        for which in args.variants.split(";"):
            prof = out / f"profile-{which.split(':')[0]}.txt" if args.profile and ":" not in which else None
            r = step_speed(_models(which), 128, 512, profile=prof)
            rows.append(dict(model=which, res=128, batch=512, **r))
            print(f"variant {which:45s} 128px/512: {r['images_per_second']:8.0f} img/s", flush=True)
        report["variants"] = rows
        save()

    if "data" in only and args.data:
        from scaling.data import load_data

        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            ds = load_data(args.data, 128, cache_dir=d, quiet=True)
            build = time.perf_counter() - t0
            t0 = time.perf_counter()
            ds = load_data(args.data, 128, cache_dir=d, quiet=True)
            _ = ds.train.images[-1].sum().item(), ds.val.images[-1].sum().item()
            load = time.perf_counter() - t0
        report["data"] = dict(build_s=build, load_s=load, train=len(ds.train), val=len(ds.val))
        print(f"data cache at 128px: build {build:.1f} s, load {load:.2f} s", flush=True)
        save()

    if ("epoch" in only or "accuracy" in only) and args.data:
        from scaling.data import load_data
        from scaling.recipe import Recipe
        from scaling.spec import spec_for
        from scaling.train import train

        ds = load_data(args.data, 128, quiet=True)
        spec = spec_for("efficientnet-b0")
        if "epoch" in only:
            report["epoch"] = {}
            for graphs in (False, True):
                synth = step_speed(_models("scaling"), 128, 512, optimizer="sgd", graph=graphs)
                with GpuSampler() as gpu:
                    res = train(spec, ds, Recipe(epochs=2, batch_size=512), device="cuda", quiet=True,
                                cuda_graphs=graphs)
                key = "graphs" if graphs else "eager"
                report["epoch"][key] = dict(
                    end_to_end_images_per_second=res.images_per_second,
                    synthetic_images_per_second=synth["images_per_second"],
                    ratio=res.images_per_second / synth["images_per_second"],
                    times=res.times, gpu_util_mean=gpu.mean, top1=res.top1, notes=res.notes)
                print(f"epoch {key}: e2e {res.images_per_second:.0f} img/s vs synthetic "
                      f"{synth['images_per_second']:.0f} ({res.images_per_second / synth['images_per_second']:.2f}x); "
                      f"GPU util {gpu.mean}; top-1 {res.top1}", flush=True)
                save()
        if "accuracy" in only:
            with GpuSampler() as gpu:
                t0 = time.perf_counter()
                res = train(spec, ds, Recipe(epochs=args.epochs), device="cuda", quiet=True)
                wall = time.perf_counter() - t0
            report["accuracy"] = dict(top1=res.top1, top5=res.top5, wall_s=wall, history=res.history,
                                      times=res.times, images_per_second=res.images_per_second,
                                      gpu_util_mean=gpu.mean, recipe=res.recipe, status=res.status)
            print(f"accuracy B0 128px {args.epochs} epochs: top-1 {res.top1}, {wall:.0f} s, GPU util {gpu.mean}",
                  flush=True)
            save()
    save()


if __name__ == "__main__":
    main()
