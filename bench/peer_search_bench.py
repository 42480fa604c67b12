"""The peer of `scaling search`: the Optuna objective a user would write without this tool.

    python bench/peer_search_bench.py --data cifar10-jpeg.tar.gz --networks 1.0:1.0:64,1.1:1.2:72 \
        --epochs 10 --batch-size 256 --out DIR

Each trial builds the scaled network with timm's EfficientNet generator (channel and depth
multipliers), reads the images with torchvision's ImageFolder through a DataLoader whose
worker processes decode and augment on the CPU (random resized crop and flip for training,
resize for evaluation), and trains with the recipe of scaling's ``proxy`` (SGD with Nesterov
momentum 0.9, --lr per 256 images (0.2), one warm-up epoch then cosine, label smoothing 0.1, weight
decay --weight-decay (5e-5) off batch norm and biases) in bf16 autocast and channels_last, with cudnn
autotuning on as such scripts usually have it. One trial per network (Optuna's grid sampler
over their indices); it prints trials per hour and each trial's wall time and top-1, and
writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tarfile
import tempfile
import time
from pathlib import Path


def _folder(data: str) -> Path:
    """An ImageFolder root: the folder itself, or an archive unpacked once into a temporary folder."""
    path = Path(data)
    if path.is_dir():
        root = path
    else:
        root = Path(tempfile.mkdtemp(prefix="peer-data-"))
        with tarfile.open(path) as tar:
            tar.extractall(root, filter="data")
    for candidate in [root, *sorted(p for p in root.iterdir() if p.is_dir())]:
        if (candidate / "train").is_dir():
            return candidate
    raise SystemExit(f"no train/ folder in {data}")


def _val_dir(root: Path) -> Path:
    for name in ("val", "validation", "test"):
        if (root / name).is_dir():
            return root / name
    raise SystemExit(f"no val/ or test/ folder in {root}")


def objective_factory(args, root: Path, networks: list[tuple[float, float, int]], log: list[dict]):
    import timm.models.efficientnet as timm_effnet
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = dev.type == "cuda"
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)

    def objective(trial) -> float:
        t0 = time.perf_counter()
        width, depth, res = networks[trial.suggest_categorical("network", list(range(len(networks))))]
        train_tf = transforms.Compose([transforms.RandomResizedCrop(res, scale=(0.35, 1.0)),
                                       transforms.RandomHorizontalFlip(), transforms.ToTensor(),
                                       transforms.Normalize(mean, std)])
        val_tf = transforms.Compose([transforms.Resize(res), transforms.CenterCrop(res), transforms.ToTensor(),
                                     transforms.Normalize(mean, std)])
        train_set = datasets.ImageFolder(root / "train", train_tf)
        val_set = datasets.ImageFolder(_val_dir(root), val_tf)
        train_loader = DataLoader(train_set, args.batch_size, shuffle=True, drop_last=True,
                                  num_workers=args.workers, pin_memory=dev.type == "cuda",
                                  persistent_workers=args.workers > 0)
        val_loader = DataLoader(val_set, 1024, num_workers=args.workers, pin_memory=dev.type == "cuda")
        model = timm_effnet._gen_efficientnet("efficientnet_b0", channel_multiplier=width, depth_multiplier=depth,
                                              num_classes=len(train_set.classes), drop_rate=0.2,
                                              drop_path_rate=0.2).to(dev).to(memory_format=torch.channels_last)
        decay = [p for p in model.parameters() if p.ndim > 1]
        no_decay = [p for p in model.parameters() if p.ndim <= 1]
        peak = args.lr * args.batch_size / 256
        opt = torch.optim.SGD([{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                              lr=peak, momentum=0.9, nesterov=True)
        steps = len(train_loader)
        total, warm = args.epochs * steps, steps
        step = 0
        t_train = 0.0
        for epoch in range(args.epochs):
            model.train()
            t_epoch = time.perf_counter()
            for x, y in train_loader:
                lr = peak * (step + 1) / warm if step < warm else \
                    peak * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))
                for g in opt.param_groups:
                    g["lr"] = lr
                x = x.to(dev, non_blocking=True).to(memory_format=torch.channels_last)
                y = y.to(dev, non_blocking=True)
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                    loss = F.cross_entropy(model(x).float(), y, label_smoothing=0.1)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t_train += time.perf_counter() - t_epoch
        model.eval()
        correct = n = 0
        with torch.no_grad():
            for x, y in val_loader:
                x = x.to(dev, non_blocking=True).to(memory_format=torch.channels_last)
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                    pred = model(x).argmax(1).cpu()
                correct += (pred == y).sum().item()
                n += y.numel()
        top1 = correct / n
        log.append({"network": [width, depth, res], "top1": round(top1, 4),
                    "wall_s": round(time.perf_counter() - t0, 2), "train_loop_s": round(t_train, 2),
                    "images_per_s": round(args.epochs * steps * args.batch_size / t_train, 1)})
        print(f"trial {trial.number}: w {width:g} d {depth:g} r {res}: top-1 {100 * top1:.2f}%, "
              f"{log[-1]['wall_s']:.1f} s ({log[-1]['images_per_s']:,.0f} img/s in its epochs)", flush=True)
        return top1

    return objective


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="ImageFolder folder or archive (train/ and val/ or test/)")
    ap.add_argument("--networks", required=True, help="width:depth:resolution, comma-separated")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=0.2, help="learning rate per 256 images (the study's recipe)")
    ap.add_argument("--weight-decay", type=float, default=5e-5)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="DataLoader processes")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    import optuna

    networks = [(float(w), float(d), int(r)) for w, d, r in (n.split(":") for n in args.networks.split(","))]
    root = _folder(args.data)
    log: list[dict] = []
    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.GridSampler({"network": list(range(len(networks)))}))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    t0 = time.perf_counter()
    study.optimize(objective_factory(args, root, networks, log), n_trials=len(networks))
    wall = time.perf_counter() - t0
    summary = {"trials": len(log), "wall_s": round(wall, 1), "trials_per_hour": round(3600 * len(log) / wall, 1),
               "epochs": args.epochs, "batch_size": args.batch_size, "workers": args.workers, "trials_log": log}
    print(f"peer: {len(log)} trials in {wall:.1f} s = {summary['trials_per_hour']:.1f} trials/hour")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "peer_search_bench.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
