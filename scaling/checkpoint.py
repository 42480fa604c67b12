"""What a training run was trained on, and whether a checkpoint or weights file fits a run.

A checkpoint (``scaling-train/1``) and a weights file (``scaling/1``) carry the class names
of the data they were trained on (in label order) and the data's fingerprint. Resuming
refuses a checkpoint of another run, saying what differs; evaluating maps the classifier
by name where the data has the same classes in another order, and refuses other classes.
Files written before class names were stored still load, with a warning that the classes
cannot be checked.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from .recipe import Recipe
from .spec import NetworkSpec


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
    import hashlib

    def split(s) -> dict:
        labels = s.labels.to(torch.int64).cpu().numpy().tobytes()
        return {"images": len(s), "labels": hashlib.sha256(labels).hexdigest()[:16]}

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


def read_saved_result(path: Path) -> dict:
    """The TrainResult dict saved in a training checkpoint."""
    try:
        ck = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - truncated or not a torch file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RunMismatch(f"{path} cannot be read ({first}); --fresh starts again") from None
    if not isinstance(ck, dict) or ck.get("format") != "scaling-train/1" or "result" not in ck:
        raise RunMismatch(f"{path} is not a training checkpoint of this tool")
    return ck["result"]


# ---------------------------------------------------------------------------- weights


def weights_classes(path: Path) -> list[str] | None:
    """The class names a weights file of ours stores, or None (another tool's file, or an old one)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - not ours: the loader says what is wrong with it
        return None
    if isinstance(obj, dict) and obj.get("format") == "scaling/1" and obj.get("classes"):
        return [str(c) for c in obj["classes"]]
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
