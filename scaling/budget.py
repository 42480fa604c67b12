"""What a study costs on a machine without a GPU: the reduced budget of the embedded default, and the estimate.

On a CPU, the default study (no study file, the embedded data) would train its grid at
B0's full size for hours. :func:`cpu_budget` shrinks it to :data:`CPU_BUDGET` (each field the
caller did not give) under the name ``default-cpu``, with a note that says so;
:func:`cpu_estimate` says, before any training, how long a set of networks would take on
the CPU. ``scaling search``, ``family --train``, ``sweep --train`` and :mod:`scaling.api`
all go through them, so a notebook gets the budget the command line gets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from .study import StudyConfig
from .units import plural

# On a machine without a GPU, the default study shrinks to this and says so.
CPU_BUDGET = dict(base_resolution=40, base_width=0.25, base_depth=0.25, train_size=2000, val_size=500, trials=12,
                  recipe={"name": "proxy", "epochs": 4, "batch_size": 64, "lr": 0.4})
CPU_NAME = "default-cpu"
FULL = "The full study, on a GPU: scaling search --phi 1 --name default --base-resolution 224"


@dataclass(frozen=True)
class Budget:
    """A study's definition as it will run, and the note that says what was reduced ('' where nothing was)."""

    config: StudyConfig
    note: str = ""

    @property
    def reduced(self) -> bool:
        return bool(self.note)


def cpu_budget(config: StudyConfig, given: Mapping[str, object] | None = None, *, gpus: int = 0,
               from_file: bool = False) -> Budget:
    """``config`` as it runs on ``gpus`` GPUs: the embedded default defined by options alone
    (not ``from_file``) on none is reduced to :data:`CPU_BUDGET`, each field but those in
    ``given`` (the options the user set; ``epochs`` and ``batch_size`` there are kept in the
    reduced recipe), and named ``default-cpu`` unless ``given`` names it. Anything else is as is."""
    given = {k: v for k, v in (given or {}).items() if v is not None}
    if gpus or from_file or config.source != "default":
        return Budget(config)
    reduced = {k: v for k, v in CPU_BUDGET.items() if k not in given and k != "recipe"}
    recipe = {**CPU_BUDGET["recipe"], **{k: given[k] for k in ("epochs", "batch_size") if k in given}}
    if "recipe" in given:
        recipe = dict(given["recipe"])
    config = config.replace(**reduced, recipe=recipe, name=given.get("name") or CPU_NAME)
    return Budget(config, budget_note(config))


def budget_note(config: StudyConfig) -> str:
    """One line: the reduced study, as it will run."""
    r = config.training_recipe()
    n = config.trials or 0
    what = (f"{n} of the grid's networks (spread over it)" if config.sampler == "grid"
            else f"{plural(n, 'trial')} ({config.sampler})")
    images = f"{config.train_size:,} images" if config.train_size else "all images"
    return (f"no GPU: a reduced budget - {what}, each {plural(r.epochs, 'epoch')} on {images} of the embedded data, "
            f"from a base of {'B0' if config.base == 'efficientnet-b0' else config.base} at width {config.base_width:g}, depth {config.base_depth:g}, "
            f"{config.base_resolution} px. {FULL}")


# A rough guide for a CPU, not a measurement: PyTorch on a few cores sustains a few G
# multiply-adds/s when training small ConvNets. A training image costs about three forward
# passes (forward, and backward's two products), a held-out image one.
CPU_MACS_PER_S = 4e9


def cpu_estimate(specs, n_train: int, n_val: int, epochs: int, seeds: int) -> str:
    """One line: how long ``specs`` (each ``seeds`` times) would train on the CPU, from their counted FLOPs."""
    from .complexity import count
    from .progress import duration

    per_image = [count(s).flops for s in specs]
    macs = sum(per_image) * seeds * epochs * (3 * n_train + n_val)
    return (f"no GPU: {plural(len(specs), 'network')} x {plural(seeds, 'seed')} x {plural(epochs, 'epoch')} on "
            f"{n_train:,} images: {_macs(macs)} multiply-adds (fvcore's count), about {duration(max(1.0, macs / CPU_MACS_PER_S))} "
            f"on the CPU at an assumed {CPU_MACS_PER_S / 1e9:g} G multiply-adds/s; --base-resolution, --trials and "
            "--epochs make it smaller")


def _macs(macs: float) -> str:
    return f"{macs / 1e12:.3g} T" if macs >= 1e12 else f"{macs / 1e9:.3g} G"


def search_specs(config: StudyConfig, selected=None) -> list:
    """The networks a search of ``config`` trains (grid: the first ``trials`` in spread order,
    or the ``selected`` ones)."""
    from .search import DEFAULT_TRIALS, spread_order, study_candidates

    cands = study_candidates(config)
    if selected is not None:
        return [cands[k].spec for k in selected.keys]
    if config.sampler == "grid":
        order = spread_order(cands)
        return [cands[i].spec for i in order[:config.trials or len(order)]]
    n = config.trials or DEFAULT_TRIALS  # tpe and random may pick any candidate: cycle through them
    return [cands[i % len(cands)].spec for i in range(n)]
