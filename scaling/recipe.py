"""Training recipes: optimizer, schedule and regularisation, as a dataclass saved with every result."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Recipe:
    """How to train: everything but the network and the data.

    The learning rate is given per 256 images and scaled linearly with the batch size.
    """

    name: str = "proxy"
    epochs: int = 10
    batch_size: int = 256
    optimizer: str = "sgd"  # sgd (Nesterov), adamw or rmsprop
    lr: float = 0.2  # per 256 images
    momentum: float = 0.9
    weight_decay: float = 5e-5  # not applied to batch-norm parameters and biases
    warmup_epochs: float = 1.0  # linear from 0
    schedule: str = "cosine"  # cosine (to 0) or step (decay_rate every decay_epochs)
    decay_rate: float = 0.97
    decay_epochs: float = 2.4
    label_smoothing: float = 0.1
    ema: float = 0.0  # decay of an exponential moving average of the weights; 0: none
    rmsprop_alpha: float = 0.9  # RMSProp's squared-gradient decay
    rmsprop_eps: float = 1e-3
    # Evaluate on the held-out split after every eval_every-th epoch, and always after the last
    # (pruning sees only these epochs; the curves have no top-1 at the others).
    eval_every: int = 1
    min_micro_batch: int = 8  # out of memory: halve the micro-batch down to this, then fail
    # Batch-norm momentum while training (PyTorch convention); None keeps the spec's 0.01
    # (TensorFlow's 0.99), whose running statistics need thousands of steps to settle:
    # too slow for a short proxy run, which is evaluated with them.
    bn_momentum: float | None = 0.1

    def __post_init__(self) -> None:
        if self.optimizer not in ("sgd", "adamw", "rmsprop"):
            raise ValueError(f"optimizer must be sgd, adamw or rmsprop, got {self.optimizer!r}")
        if self.schedule not in ("cosine", "step"):
            raise ValueError(f"schedule must be cosine or step, got {self.schedule!r}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.eval_every < 1:
            raise ValueError(f"eval_every must be at least 1, got {self.eval_every}")
        if not 0 <= self.ema < 1:
            raise ValueError(f"ema must lie in [0, 1), got {self.ema}")

    def peak_lr(self) -> float:
        return self.lr * self.batch_size / 256

    def lr_at(self, step: int, steps_per_epoch: int) -> float:
        """Learning rate at optimizer step ``step`` (0-based).

        1. Warm-up: linear from lr / warmup_steps to lr over ``warmup_epochs``.
        2. Then ``cosine``: half a cosine to 0 at the last step; or ``step``: times
           ``decay_rate`` every ``decay_epochs`` (the paper's staircase).
        """
        peak = self.peak_lr()
        total = self.epochs * steps_per_epoch
        warm = int(round(self.warmup_epochs * steps_per_epoch))
        if step < warm:
            return peak * (step + 1) / warm
        if self.schedule == "cosine":
            progress = (step - warm) / max(1, total - warm)
            return peak * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return peak * self.decay_rate ** math.floor(step / steps_per_epoch / self.decay_epochs)

    def replace(self, **changes) -> "Recipe":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Recipe":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown recipe fields: {sorted(unknown)}")
        return cls(**d)


RECIPES: dict[str, Recipe] = {
    # Short proxy runs: SGD with Nesterov, one warm-up epoch, cosine, label smoothing.
    "proxy": Recipe(),
    # Tan & Le 2019: RMSProp (decay 0.9, momentum 0.9), weight decay 1e-5, lr 0.256 per
    # 4096 images (0.016 per 256) decayed by 0.97 every 2.4 epochs, EMA 0.9999.
    "paper": Recipe(
        name="paper", epochs=350, batch_size=256, optimizer="rmsprop", lr=0.016, momentum=0.9,
        weight_decay=1e-5, warmup_epochs=5.0, schedule="step", decay_rate=0.97, decay_epochs=2.4,
        label_smoothing=0.1, ema=0.9999, bn_momentum=None,
    ),
}


def get_recipe(name: str, **overrides) -> Recipe:
    """A named recipe (``proxy`` or ``paper``) with any field overridden."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}")
    return RECIPES[name].replace(name=name, **{k: v for k, v in overrides.items() if v is not None})
