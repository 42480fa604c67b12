"""How many images a CPU training step and a CPU evaluation batch can take, from the memory there is.

On a GPU, the training step (:class:`scaling.step.HalvingStep`) halves the micro-batch when
CUDA runs out of memory. On the CPU nothing raises: the kernel kills the process (exit 137)
with no message. So on the CPU the micro-batch is chosen up front from an estimate of what a
step costs:

* per image in the micro-batch, ``TRAIN_FACTOR`` float32 values per output element of the
  network's convolutions and linear layers (``scaling.complexity.count(spec).activations``
  at batch 1): what autograd keeps for the backward pass (the convolution's output, the
  batch norm's, the SiLU's, the squeeze-excitation's gate and product) and the backward
  pass's own buffers;
* once: the model's state (weights, gradients, the optimizer's buffers, an EMA copy), the
  batch's input (``INPUT_COPIES`` float32 copies of the batch at the resolution: cutting,
  flipping, selecting, channels_last, and the previous batch held while the next is cut;
  5 measured) and ``STEP_OVERHEAD`` (the first step's workspaces, measured up to ~200 MB
  beyond the state, and torchvision's operators, ~0.3 GB resident from the first batch).

The factors were measured against the peak resident memory (``ru_maxrss``) of CPU steps
in fresh processes, torch 2.14.1, 2 cores (docs/BENCHMARKS.md, "Peak memory of a CPU
search"): the marginal cost of one more image was 3.3 to 4.5 of those float32 values per
element on B0 at 128 to 256 px, wider and deeper networks at 64 to 160 px, so
``TRAIN_FACTOR`` = 5 keeps a margin of 1.1x to 1.5x. An evaluation batch (no gradients)
holds a few tensors of the largest layer's size at a time: 3.5 to 6.2 per element of that
layer per image was measured, ``EVAL_FACTOR`` = 8.

The micro-batch is the batch halved until the step fits in ``SHARE`` of
:func:`scaling.data.load.memory_available` (``$SCALING_MEMORY_LIMIT`` when set) and keeps
at most ``ACTIVATION_CAP`` of activations: on the CPU a larger micro-batch trained no
faster (B0 at 256 px: 0.63 to 0.69 images/s at micro-batches of 4 to 32; evaluation at
128 px: 10.7 to 12.7 images/s at 16 to 128) and only takes memory from everything else on
the machine. Gradient accumulation keeps the effective batch and the recipe (batch norm
normalises over each micro-batch, as after out-of-memory halving on a GPU).
Where even the floor (``recipe.min_micro_batch``, or fewer where batch norm allows no
fewer) does not fit, :class:`CPUMemoryError` says so in one line, with the resolution
that would fit; the CLI exits with code 2.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from .errors import InputError
from .complexity import count, layers
from .data.load import memory_available
from .recipe import Recipe
from .spec import NetworkSpec, smallest_batch

FLOAT = 4  # bytes of a float32
TRAIN_FACTOR = 5.0  # float32 values kept per conv/linear output element and image, forward and backward
EVAL_FACTOR = 8.0  # float32 values per element of the largest layer's output and image, without gradients
STEP_OVERHEAD = 512 * 2**20  # the first step's workspaces, torchvision's operators, once
INPUT_COPIES = 6  # float32 copies of a training batch at its resolution while it is cut (5 measured)
EVAL_INPUT_COPIES = 4  # the same for an evaluation batch (3 measured)
SHARE = 0.5  # of the memory available, for one step (the rest: evaluation, the estimate's error, the machine)
ACTIVATION_CAP = 2 * 2**30  # at most this much of a micro-batch's activations: larger trains no faster on a CPU

GB = 1e9


class CPUMemoryError(InputError):
    """Even the smallest micro-batch of a CPU training step does not fit in the memory there is.

    An ``InputError``, so that ``scaling train`` says it in one line and exits with code 2; in
    a search the trial fails with it as its reason."""


@dataclass(frozen=True)
class StepMemory:
    """Bytes a CPU training step of one network takes: ``fixed + micro * per_image``."""

    per_image: int  # activations kept for the backward pass, and its buffers
    state: int  # weights, gradients, optimizer buffers, EMA copy
    fixed: int  # state, the batch's input buffers and STEP_OVERHEAD

    def at(self, micro: int) -> int:
        return self.fixed + micro * self.per_image


@dataclass(frozen=True)
class MicroPlan:
    """The micro-batch chosen for a CPU training step, and why."""

    micro: int
    batch: int  # this process's images per step
    need: int  # bytes of a step at ``micro``
    available: float  # bytes available to this process
    where: str  # where ``available`` comes from
    limited_by: str  # "batch" (it fits whole), "memory" or "cap"
    larger: int | None = None  # the next larger candidate, which did not fit (limited by memory)

    @property
    def splits(self) -> bool:
        return self.micro < self.batch


def optimizer_buffers(recipe: Recipe) -> int:
    """Copies of the parameters the recipe's optimizer keeps (momentum, squared averages)."""
    if recipe.optimizer == "adamw":
        return 2
    if recipe.optimizer == "rmsprop":
        return 1 + (recipe.momentum > 0)
    return int(recipe.momentum > 0)


def step_memory(spec: NetworkSpec, recipe: Recipe, input_bytes: int = 0, processes: int = 1) -> StepMemory:
    """The estimate of a CPU training step of ``spec`` at ``spec.resolution`` (float32).

    ``input_bytes``: the batch's input (:func:`input_bytes`). Under
    DistributedDataParallel (``processes`` > 1) the gradients have one more copy in its buckets.
    """
    c = count(spec)
    copies = 2 + optimizer_buffers(recipe) + (recipe.ema > 0) + (processes > 1)  # weights, gradients, ...
    state = copies * FLOAT * c.params
    return StepMemory(per_image=int(TRAIN_FACTOR * FLOAT * c.activations), state=state,
                      fixed=state + input_bytes + STEP_OVERHEAD)


def eval_bytes_per_image(spec: NetworkSpec, input_bytes_per_image: int = 0) -> int:
    """The estimate of one image of a CPU evaluation batch (no gradients, float32)."""
    from .bases import base_of

    largest = base_of(spec).largest_activation(spec)
    return int(EVAL_FACTOR * FLOAT * largest) + input_bytes_per_image


def _local_processes(processes: int) -> int:
    """Processes of this run on this machine (torchrun's LOCAL_WORLD_SIZE), which share its memory."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", processes)))
    except ValueError:
        return max(1, processes)


def _available(processes: int) -> tuple[float, str]:
    avail, where = memory_available()
    local = _local_processes(processes)
    if local > 1:
        return avail / local, f"{where}, shared by {local} processes"
    return avail, where


def _halvings(batch: int, floor: int) -> list[int]:
    """batch, batch // 2, ... down to ``floor`` (the batch alone where it is below the floor)."""
    out = [batch]
    while out[-1] // 2 >= max(1, floor):
        out.append(out[-1] // 2)
    return out


def floor_of(spec: NetworkSpec, recipe: Recipe, batch: int) -> int:
    """The smallest micro-batch a step may take: the recipe's floor, or what batch norm needs, within the batch."""
    return min(batch, max(recipe.min_micro_batch, smallest_batch(spec)))


def choose_micro_batch(spec: NetworkSpec, recipe: Recipe, batch: int, *, split=None,
                       processes: int = 1) -> MicroPlan:
    """The largest of ``batch``, ``batch // 2``, ... whose CPU step fits (see the module's doc).

    ``spec`` as trained (the data's resolution); ``split``: the training split, for the
    batch's input buffers. Raises :class:`CPUMemoryError` where even the floor does not fit.
    """
    est = step_memory(spec, recipe, input_bytes(split, batch, spec.resolution), processes)
    avail, where = _available(processes)
    budget = SHARE * avail
    floor = floor_of(spec, recipe, batch)
    sizes = _halvings(batch, floor)
    if est.at(sizes[-1]) > budget:
        raise CPUMemoryError(_refusal(spec, recipe, batch, split, processes, est, sizes[-1], avail, where))
    fits = [m for m in sizes if est.at(m) <= budget]
    micro = next((m for m in fits if m * est.per_image <= ACTIVATION_CAP), fits[-1])
    limited = "batch" if micro == batch else ("memory" if micro == fits[0] else "cap")
    larger = sizes[sizes.index(micro) - 1] if limited == "memory" else None
    return MicroPlan(micro, batch, est.at(micro), avail, where, limited, larger)


def eval_batch_size(spec: NetworkSpec, batch: int, *, split=None, processes: int = 1) -> int:
    """The largest of ``batch``, ``batch // 2``, ... whose CPU evaluation batch fits in
    ``SHARE`` of the memory available and ``ACTIVATION_CAP`` (1 at the least)."""
    per_image = eval_bytes_per_image(spec, input_bytes(split, 1, spec.resolution, EVAL_INPUT_COPIES))
    avail, _ = _available(processes)
    limit = min(SHARE * avail, ACTIVATION_CAP)
    return next((b for b in _halvings(batch, 1) if b * per_image <= limit), 1)


def describe(plan: MicroPlan, eval_batch: int | None = None) -> str:
    """One line saying what was chosen (for when it splits the batch or bounds the evaluation's)."""
    head = f"micro-batch {plan.micro} of {plan.batch}" if plan.splits else f"the whole batch of {plan.batch}"
    there = plan.where if math.isinf(plan.available) else f"{_gb(plan.available)} of {plan.where}"
    line = f"CPU memory: {head} (about {plan.need / GB:.1f} GB a step of {there}"
    if plan.limited_by == "memory":
        line += f"; {plan.larger} would need more than {SHARE:.0%} of it)"
    elif plan.limited_by == "cap":
        line += (f"; larger micro-batches would keep more than {ACTIVATION_CAP / 2**30:.0f} GiB of activations, "
                 "which trains no faster on a CPU)")
    else:
        line += ")"
    if eval_batch is not None:
        line += f", evaluation in batches of {eval_batch}"
    return line


def _gb(n: float) -> str:
    return "unknown" if math.isinf(n) else f"{n / GB:.1f} GB"


def input_bytes(split, batch: int, resolution: int, copies: int = INPUT_COPIES) -> int:
    """Bytes of cutting one batch of ``split`` at ``resolution`` on the CPU: its uint8 gather
    and float32 copy at the stored side, ``copies`` float32 copies at the resolution (0
    without a split)."""
    if split is None:
        return 0
    side = max(split.sides)
    return batch * 3 * (side * side * 5 + resolution * resolution * FLOAT * copies)


def _refusal(spec, recipe, batch, split, processes, est: StepMemory, floor: int, avail: float, where: str) -> str:
    """One line: what the smallest step needs, what there is, and the resolution that would fit."""
    fit = None
    for r in range(spec.resolution - 8, 31, -8):
        s = spec.replace(resolution=r)
        if step_memory(s, recipe, input_bytes(split, batch, r), processes).at(floor) <= SHARE * avail:
            fit = r
            break
    what = (f"at most {fit} px would fit (or more memory, or a smaller network)" if fit is not None
            else "not even 32 px would fit: a smaller network or more memory")
    name = spec.name if spec.name and not spec.name.startswith("custom") else "this network"
    return (f"CPU memory: a training step of {name} at {spec.resolution} px needs about {est.at(floor) / GB:.2f} GB "
            f"at its smallest micro-batch ({floor} images), more than {SHARE:.0%} of the {_gb(avail)} of "
            f"{where}: {what}")
