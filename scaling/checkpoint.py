"""Training checkpoints and weights files: what they hold, how they are written and read, whether one fits a run.

The two formats, and the only module that writes or reads them (``torch.save``, ``torch.load``):

* a training checkpoint, ``scaling-train/1``, written atomically after every epoch of a run
  and read to resume it: ``epoch`` (the last one done, from 0), ``step`` (optimizer steps
  done), ``micro`` (the micro-batch it ended with), the state dicts ``model``, ``optimizer``
  and ``ema`` (None without one), ``rng`` (torch's CPU generator), ``result`` (the
  TrainResult so far, as a dict) and ``images_timed``;
* a weights file, ``scaling/1``: ``spec`` (the NetworkSpec as a dict), ``state_dict`` and,
  where training wrote it, ``classes``. :meth:`EfficientNet.save` writes one without class
  names; ``EfficientNet.from_pretrained`` (:mod:`scaling.weights`) reads it, and other
  tools' files through :func:`read_file`.

Both carry the class names of the data they were trained on (in label order) and a
checkpoint the data's fingerprint. Resuming refuses a checkpoint of another run, saying
what differs; evaluating maps the classifier by name where the data has the same classes
in another order, and refuses other classes. Files written before class names were stored
still load, with a warning that the classes cannot be checked.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from .files import atomic_path
from .recipe import Recipe
from .spec import NetworkSpec

TRAIN_FORMAT = "scaling-train/1"
WEIGHTS_FORMAT = "scaling/1"


class RunMismatch(ValueError):
    """A checkpoint or weights file that belongs to another run or other data (exit code 2 at the command line)."""


@dataclass(frozen=True)
class Resume:
    """A checkpoint that fits the run asked for: where it stands."""

    epochs_completed: int
    finished: bool  # every epoch of the recipe is done: nothing to train
    top1: float | None


def data_fingerprint(data) -> str:
    """The training and held-out splits' content, as one string."""
    return f"{data.train.fingerprint}:{data.val.fingerprint}"


def data_identity(data) -> dict:
    """What the data are, independent of the machine and the path: per split the number of
    images and a hash of their labels in order (the order of the sorted file paths), and the
    class names. Equal for one data set unpacked anywhere; a study records it at creation,
    so that a storage brought from another machine resumes only on the same data."""
    from .digest import digest_text

    def split(s) -> dict:
        labels = s.labels.to(torch.int64).cpu().numpy().tobytes()
        return {"images": len(s), "labels": digest_text(labels, 16)}

    return {"classes": list(data.classes), "train": split(data.train), "val": split(data.val)}


def identity_difference(saved: dict, mine: dict) -> str:
    """How two data identities differ, in words ("" where they do not)."""
    parts = []
    if saved.get("classes") != mine.get("classes"):
        parts.append(f"classes: {class_difference(saved.get('classes') or [], mine.get('classes') or [])}")
    for k in ("train", "val"):
        a, b = saved.get(k) or {}, mine.get(k) or {}
        if a.get("images") != b.get("images"):
            parts.append(f"{k} images {a.get('images')} -> {b.get('images')}")
        elif a.get("labels") != b.get("labels"):
            parts.append(f"{k} labels in another order or of other files")
    return "; ".join(parts)


def _changed(saved: dict, mine: dict) -> list[str]:
    return [f"{k} {saved.get(k)!r} -> {mine.get(k)!r}" for k in sorted(set(saved) | set(mine))
            if saved.get(k) != mine.get(k)]


def class_difference(saved: list[str], wanted: list[str]) -> str:
    """``missing dog; extra zz_dog`` (what the data lacks, what it has more), or the counts."""
    missing = [c for c in saved if c not in wanted]
    extra = [c for c in wanted if c not in saved]
    parts = []
    if missing:
        parts.append("missing " + ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else ""))
    if extra:
        parts.append("extra " + ", ".join(extra[:5]) + (" ..." if len(extra) > 5 else ""))
    return "; ".join(parts) or f"{len(saved)} classes -> {len(wanted)}"


def check_resume(path: Path, saved: dict, spec: NetworkSpec, recipe: Recipe, seed: int, classes: list[str],
                 fingerprint: str) -> Resume:
    """Whether the checkpoint's saved result ``saved`` (a TrainResult dict) is this run's.

    The same network, seed, data and recipe; the recipe may ask for more epochs where the
    schedule does not depend on their number (``step``), never for fewer than are done.

    Raises:
        RunMismatch: naming what differs.
    """
    what = []
    saved_classes = saved.get("classes") or []
    if saved_classes:
        if saved_classes != list(classes):
            what.append("classes (" + (class_difference(saved_classes, list(classes))
                                       if set(saved_classes) != set(classes) else "same names, other order") + ")")
        elif saved.get("data_fingerprint") and saved["data_fingerprint"] != fingerprint:
            what.append("data (the same classes, other images or another subset)")
    else:
        warnings.warn(f"{path} stores no class names (written by an older version): the data's classes "
                      "cannot be checked", stacklevel=2)
    net = _changed(saved.get("spec", {}), spec.to_dict())
    if net and not (what and net == [c for c in net if c.startswith("num_classes")]):
        what.append("network (" + ", ".join(net) + ")")
    if saved.get("seed") != seed:
        what.append(f"seed ({saved.get('seed')} -> {seed})")
    old = saved.get("recipe", {})
    with contextlib.suppress(TypeError, ValueError):  # fields a newer version added: their defaults
        old = Recipe.from_dict(old).to_dict()
    rec = [c for c in _changed(old, recipe.to_dict()) if not c.startswith("epochs ")]
    if rec:
        what.append("recipe (" + ", ".join(rec) + ")")
    if what:
        raise RunMismatch(f"checkpoint {path} belongs to another run: {'; '.join(what)}; --fresh starts again")
    done = int(saved.get("epochs_completed", 0))
    if old.get("epochs") != recipe.epochs:
        if recipe.epochs < done:
            raise RunMismatch(f"checkpoint {path} has {done} epochs done, more than --epochs {recipe.epochs}; "
                              "--fresh starts again")
        if recipe.schedule == "cosine" and recipe.epochs != old.get("epochs"):
            raise RunMismatch(
                f"checkpoint {path} was trained with a cosine schedule over {old.get('epochs')} epochs, which sets "
                f"the learning rate of every step from the total; {recipe.epochs} epochs would be another schedule "
                "from the first step: --fresh trains them (a step schedule can be continued)")
    return Resume(epochs_completed=done, finished=done >= recipe.epochs and saved.get("status") == "ok",
                  top1=saved.get("top1"))


# ---------------------------------------------------------------------------- training checkpoints


def save_checkpoint(path: Path, *, epoch: int, step: int, micro: int, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, ema: torch.nn.Module | None, result: dict,
                    images_timed: int) -> None:
    """Write a training checkpoint atomically: the run after ``epoch`` (from 0), with torch's CPU generator.

    ``model``: the bare network (not its DistributedDataParallel wrapper); ``result``: the
    TrainResult so far, as a dict.
    """
    obj = {
        "format": TRAIN_FORMAT, "epoch": epoch, "step": step, "micro": micro,
        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "ema": ema.state_dict() if ema is not None else None,
        "rng": torch.get_rng_state(), "result": result, "images_timed": images_timed,
    }
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


@dataclass(frozen=True)
class Position:
    """Where a restored checkpoint left its run."""

    next_epoch: int  # the first epoch still to train (from 0)
    step: int  # optimizer steps done
    micro: int  # the micro-batch it ended with
    images_timed: int  # training images timed (after the warm-up)
    result: dict  # the TrainResult so far, as a dict


def load_checkpoint(path: Path, device: torch.device, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    ema: torch.nn.Module | None, lr: torch.Tensor | None = None) -> Position:
    """Put a training checkpoint that :func:`check_resume` found to be this run's into ``model``,
    ``optimizer``, ``ema`` and torch's CPU generator; where it left the run.

    ``lr``: the device tensor a fused optimizer reads its learning rate from (loading the
    optimizer's state replaces it with copies; it is put back).
    """
    ck = torch.load(path, map_location=device, weights_only=False)
    model.load_state_dict(ck["model"])
    optimizer.load_state_dict(ck["optimizer"])
    if lr is not None:
        for g in optimizer.param_groups:
            g["lr"] = lr
    if ema is not None and ck["ema"] is not None:
        ema.load_state_dict(ck["ema"])
    torch.set_rng_state(ck["rng"].cpu())
    return Position(next_epoch=ck["epoch"] + 1, step=ck["step"], micro=ck["micro"], images_timed=ck["images_timed"],
                    result=ck["result"])


def read_saved_result(path: Path) -> dict:
    """The TrainResult dict saved in a training checkpoint."""
    try:
        ck = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - truncated or not a torch file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RunMismatch(f"{path} cannot be read ({first}); --fresh starts again") from None
    if not isinstance(ck, dict) or ck.get("format") != TRAIN_FORMAT or "result" not in ck:
        raise RunMismatch(f"{path} is not a training checkpoint of this tool")
    return ck["result"]


# ---------------------------------------------------------------------------- weights


def save_weights(path: str | Path, spec: NetworkSpec, state_dict: Mapping[str, torch.Tensor],
                 classes: list[str] | None = None) -> None:
    """Write a weights file atomically: the network's spec and state dict, and the class names
    of its data (in label order) where given."""
    obj = {"format": WEIGHTS_FORMAT, "spec": spec.to_dict(), "state_dict": state_dict}
    if classes is not None:
        obj["classes"] = list(classes)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


@dataclass(frozen=True)
class Weights:
    """What a weights file of ours holds."""

    spec: Mapping  # the NetworkSpec as a dict
    state_dict: object  # a Mapping of tensors, in a well-formed file
    classes: list[str] | None  # None: written without class names (by EfficientNet.save, or an older version)


def read_file(path: Path):
    """What a weights file holds, ours or another tool's, read without running code from it
    (``weights_only=True``; a file that holds more raises ``pickle.UnpicklingError``)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def weights_of(obj: Mapping, path: Path) -> Weights | None:
    """The weights in what :func:`read_file` returned, or None where it names no format (a
    state dict, another tool's checkpoint).

    Raises:
        ValueError: where it names another format, or is ours without a spec.
    """
    if "format" not in obj:
        return None
    if obj["format"] != WEIGHTS_FORMAT:
        raise ValueError(f"{path}: unsupported checkpoint format {obj['format']!r}")
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        raise ValueError(f"{path}: {WEIGHTS_FORMAT} checkpoint without a spec")
    classes = [str(c) for c in obj["classes"]] if obj.get("classes") else None
    return Weights(spec=spec, state_dict=obj.get("state_dict"), classes=classes)


def read_weights(path: Path) -> Weights | None:
    """The weights file of ours at ``path``, or None (another tool's file, or one that cannot be read)."""
    try:
        obj = read_file(path)
    except Exception:  # noqa: BLE001 - not ours: the loader says what is wrong with it
        return None
    if not isinstance(obj, dict) or obj.get("format") != WEIGHTS_FORMAT:
        return None
    try:
        return weights_of(obj, path)
    except ValueError:  # ours without a spec: the loader says so
        return None


def match_classes(model: torch.nn.Module, saved: list[str], wanted: list[str], path: Path) -> bool:
    """Make ``model``'s classifier (trained on classes ``saved``) answer in the order of ``wanted``.

    Returns whether it was reordered.

    Raises:
        RunMismatch: where the two are not the same set of names.
    """
    if saved == list(wanted):
        return False
    if set(saved) != set(wanted) or len(saved) != len(wanted):
        raise RunMismatch(f"{path} was trained on other classes than the data's: "
                          f"{class_difference(saved, list(wanted))}")
    order = torch.tensor([saved.index(c) for c in wanted])
    with torch.no_grad():
        head = model.classifier
        head.weight.copy_(head.weight[order])
        head.bias.copy_(head.bias[order])
    return True
