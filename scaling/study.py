"""A study's definition: TOML file and/or options, resolved into one frozen dataclass.

    name = "default"
    [data]      source, base_resolution, train_size, val_size
    [grid]      phi, alpha, beta, gamma (each [low, high]), step, tolerance, target, multiple,
                base (efficientnet-b0, resnet50, mobilenetv2 or module:function; default efficientnet-b0),
                base_width, base_depth (the base's multipliers for the base network; default 1),
                flops_tolerance (realized FLOPs within it of target^phi x the base's; default 0.1)
    [search]    sampler (grid, tpe, random), trials, seeds, prune, per_gpu (workers on each GPU, or "auto"),
                objective (accuracy, accuracy-flops, accuracy-latency), objective_target (T: FLOPs, or
                latency in ms), objective_exponent (w; default -0.07): a trial's value is ACC x (X/T)^w
    [recipe]    name (proxy, paper) and any Recipe field

The resolved definition is saved as studies/NAME/study.json; running the same name with
different settings is refused, so one study never mixes two definitions. ``per_gpu`` says
how a study runs, not what it is: it may change from one run of a study to the next.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError
from pydantic import field_validator

from .compound import FLOPS_TOLERANCE, Grid
from .files import write_text_atomic
from .recipe import RECIPES, Recipe, get_recipe

SAMPLERS = ("grid", "tpe", "random")
SECTIONS = {
    "data": ("source", "base_resolution", "train_size", "val_size"),
    "grid": ("phi", "alpha", "beta", "gamma", "step", "tolerance", "target", "multiple", "base", "base_width",
             "base_depth", "flops_tolerance"),
    "search": ("sampler", "trials", "seeds", "prune", "per_gpu", "objective", "objective_target",
               "objective_exponent"),
}
OBJECTIVES = ("accuracy", "accuracy-flops", "accuracy-latency")
PAPER_EXPONENT = -0.07  # Tan & Le 2019 (and MnasNet): ACC(m) x [FLOPS(m) / T]^w with w = -0.07
# Fields added after studies were first saved: a saved definition without one has its value here.
ADDED = {"base": "efficientnet-b0", "objective": "accuracy", "objective_target": None,
         "objective_exponent": PAPER_EXPONENT}
# How a study is run, not what it is: may change between runs of one study (not compared on resume).
EXECUTION = ("per_gpu",)
# Where its data lie on this machine: another path resumes the study (a storage brought from
# another machine) where the data there are the same (the search checks the study's recorded
# data identity, scaling.checkpoint.data_identity); the embedded default against a path differs.
LOCATION = ("source",)
PER_GPU_MAX = 16


class StudyError(ValueError):
    """A study definition that cannot be used (exit code 2 at the command line)."""


@dataclass(frozen=True)
class StudyConfig:
    name: str = "default"
    # data
    source: str = "default"  # "default" (embedded) or a path
    base_resolution: int = 224
    train_size: int | None = None
    val_size: int | None = None
    # grid
    base: str = "efficientnet-b0"  # the network scaled: efficientnet-b0, resnet50, mobilenetv2 or module:function
    base_width: float = 1.0  # the base network: the base with these multipliers (1, 1: itself)
    base_depth: float = 1.0
    phi: float = 1.0
    alpha: tuple[float, float] = (1.0, 2.0)
    beta: tuple[float, float] = (1.0, 1.5)
    gamma: tuple[float, float] = (1.0, 1.5)
    step: float = 0.05
    tolerance: float = 0.05
    target: float = 2.0
    multiple: int = 8
    flops_tolerance: float | None = FLOPS_TOLERANCE  # None: nominal rounding only (definitions before the hold)
    # search
    sampler: str = "grid"
    trials: int | None = None  # grid: the first N networks in spread order; tpe/random: N trials
    seeds: int = 1
    prune: bool = False
    per_gpu: int | str = 1  # workers on each GPU (under MPS where there is one), or "auto"
    objective: str = "accuracy"  # a trial's value: top-1, or top-1 x (FLOPs / T)^w or x (latency / T)^w
    objective_target: float | None = None  # T: FLOPs (default: the base network's), or latency in ms (required)
    objective_exponent: float = PAPER_EXPONENT  # w
    # training
    recipe: dict = field(default_factory=lambda: {"name": "proxy"})
    # what to train instead of the grid: a plans.Plan as a dict (family, official, sweep)
    plan: dict | None = None

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise StudyError(f"study name must be a plain folder name, got {self.name!r}")
        if not 0 <= self.phi <= 10:
            raise StudyError(f"phi must lie in 0..10, got {self.phi}")
        if self.sampler not in SAMPLERS:
            raise StudyError(f"sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")
        if self.trials is not None and self.trials < 1:
            raise StudyError(f"trials must be at least 1, got {self.trials}")
        if self.seeds < 1:
            raise StudyError(f"seeds must be at least 1, got {self.seeds}")
        if self.per_gpu != "auto" and not (isinstance(self.per_gpu, int) and 1 <= self.per_gpu <= PER_GPU_MAX):
            raise StudyError(f"per_gpu must be a whole number in 1..{PER_GPU_MAX} or \"auto\", got {self.per_gpu!r}")
        if self.base_resolution < 8:
            raise StudyError(f"base_resolution must be at least 8, got {self.base_resolution}")
        if self.flops_tolerance is not None and not 0 < self.flops_tolerance < 10:
            raise StudyError(f"flops_tolerance must lie in (0, 10), got {self.flops_tolerance}")
        for key in ("alpha", "beta", "gamma"):
            object.__setattr__(self, key, tuple(float(v) for v in getattr(self, key)))
        from .bases import BaseError, canonical

        try:
            object.__setattr__(self, "base", canonical(self.base))
        except BaseError as e:
            raise StudyError(str(e)) from None
        if self.objective not in OBJECTIVES:
            raise StudyError(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        if self.objective_target is not None:
            object.__setattr__(self, "objective_target", float(self.objective_target))
        if self.objective_target is not None and not self.objective_target > 0:
            raise StudyError(f"objective_target must be positive, got {self.objective_target}")
        if self.objective == "accuracy-latency" and self.objective_target is None:
            raise StudyError("objective accuracy-latency needs its target T, a latency in ms (--target, "
                             "[search] objective_target)")
        try:
            self.grid()
            self.training_recipe()
            if self.plan is not None:
                from .plans import Plan

                Plan.from_dict(self.plan)
        except ValueError as e:
            raise StudyError(str(e)) from None

    def grid(self) -> Grid:
        return Grid(alpha=self.alpha, beta=self.beta, gamma=self.gamma, step=self.step,
                    target=self.target, tolerance=self.tolerance)

    def training_recipe(self) -> Recipe:
        r = dict(self.recipe)
        name = r.pop("name", "proxy")
        known = {f.name for f in dataclasses.fields(Recipe)}
        unknown = set(r) - known
        if unknown:
            raise StudyError(f"unknown recipe key {sorted(unknown)[0]!r}; known: {', '.join(sorted(known))}")
        return get_recipe(name, **r)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["alpha"], d["beta"], d["gamma"] = list(self.alpha), list(self.beta), list(self.gamma)
        return d

    @classmethod
    def from_json(cls, text: str) -> "StudyConfig":
        """A definition saved by :meth:`to_dict` (study.json, the study's "definition" attribute)."""
        try:
            fields = json.loads(text)
            if isinstance(fields, dict):  # saved before candidates were held to their FLOPs
                fields.setdefault("flops_tolerance", None)  # (the fields added since have their defaults)
            return cls(**fields)
        except (ValueError, TypeError) as e:  # StudyError is a ValueError too
            raise StudyError(f"unreadable study definition: {e}") from None

    def replace(self, **changes) -> "StudyConfig":
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


# ---------------------------------------------------------------------------- study files

def _num(description: str, **limits):
    return Annotated[StrictFloat | None, Field(description=description, **limits)]


def _int(description: str, **limits):
    return Annotated[StrictInt | None, Field(description=description, **limits)]


_Range = tuple[Annotated[StrictFloat, Field(ge=1)], Annotated[StrictFloat, Field(ge=1)]]
_RANGE = "[low, high] with 1 <= low <= high"


class _Values(BaseModel):
    """Each key's type and allowed range; a key the file does not set stays None (the default)."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[StrictStr | None, Field(description="a plain folder name (no '/', not starting with '.')",
                                            pattern=r"^[^/.][^/]*$")] = None
    # [data]
    source: Annotated[StrictStr | None, Field(description="'default' or a path", min_length=1)] = None
    base_resolution: _int("a whole number in 8..4096", ge=8, le=4096) = None
    train_size: _int("a whole number >= 1", ge=1) = None
    val_size: _int("a whole number >= 1", ge=1) = None
    # [grid]
    phi: _num("a number in 0..10", ge=0, le=10) = None
    alpha: Annotated[_Range | None, Field(description=_RANGE)] = None
    beta: Annotated[_Range | None, Field(description=_RANGE)] = None
    gamma: Annotated[_Range | None, Field(description=_RANGE)] = None
    step: _num("a number > 0", gt=0) = None
    tolerance: _num("a number in (0, 1)", gt=0, lt=1) = None
    target: _num("a number > 1", gt=1) = None
    multiple: _int("a whole number in 1..256", ge=1, le=256) = None
    base: Annotated[StrictStr | None, Field(description="efficientnet-b0, resnet50, mobilenetv2 or module:function",
                                            min_length=1)] = None
    base_width: _num("a number in (0, 64]", gt=0, le=64) = None
    base_depth: _num("a number in (0, 64]", gt=0, le=64) = None
    flops_tolerance: _num("a number in (0, 10)", gt=0, lt=10) = None
    # [search]
    sampler: Annotated[Literal["grid", "tpe", "random"] | None, Field(description="grid, tpe or random")] = None
    trials: _int("a whole number >= 1", ge=1) = None
    seeds: _int("a whole number >= 1", ge=1) = None
    prune: Annotated[StrictBool | None, Field(description="true or false")] = None
    per_gpu: Annotated[Annotated[StrictInt, Field(ge=1, le=PER_GPU_MAX)] | Literal["auto"] | None,
                       Field(description=f'a whole number in 1..{PER_GPU_MAX} or "auto"')] = None
    objective: Annotated[Literal[OBJECTIVES] | None, Field(description=" or ".join(OBJECTIVES))] = None
    objective_target: Annotated[StrictFloat | StrictInt | None, Field(description="a number > 0", gt=0)] = None
    objective_exponent: _num("a number in [-1, 1]", ge=-1, le=1) = None

    @field_validator("alpha", "beta", "gamma")
    @classmethod
    def _ordered(cls, v):
        if v is not None and v[0] > v[1]:
            raise ValueError("low > high")
        return v


class _RecipeValues(BaseModel):
    """The [recipe] table: a Recipe's fields (tests check they are the same), each with its range."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[Literal[tuple(RECIPES)] | None, Field(description=" or ".join(RECIPES))] = None
    epochs: _int("a whole number >= 1", ge=1) = None
    batch_size: _int("a whole number >= 1", ge=1) = None
    optimizer: Annotated[Literal["sgd", "adamw", "rmsprop"] | None, Field(description="sgd, adamw or rmsprop")] = None
    lr: _num("a number > 0", gt=0) = None
    momentum: _num("a number in [0, 1)", ge=0, lt=1) = None
    weight_decay: _num("a number >= 0", ge=0) = None
    warmup_epochs: _num("a number >= 0", ge=0) = None
    schedule: Annotated[Literal["cosine", "step"] | None, Field(description="cosine or step")] = None
    decay_rate: _num("a number in (0, 1]", gt=0, le=1) = None
    decay_epochs: _num("a number > 0", gt=0) = None
    label_smoothing: _num("a number in [0, 1)", ge=0, lt=1) = None
    ema: _num("a number in [0, 1)", ge=0, lt=1) = None
    rmsprop_alpha: _num("a number in (0, 1)", gt=0, lt=1) = None
    rmsprop_eps: _num("a number > 0", gt=0) = None
    eval_every: _int("a whole number >= 1", ge=1) = None
    min_micro_batch: _int("a whole number >= 1", ge=1) = None
    bn_momentum: _num("a number in (0, 1]", gt=0, le=1) = None


def _validated(model: type[BaseModel], values: dict, path: Path, where) -> dict:
    """``values`` checked against ``model``; the first bad one as a StudyError naming file, key and range."""
    try:
        return model(**values).model_dump(exclude_unset=True)
    except ValidationError as e:
        first = e.errors()[0]
        key = str(first["loc"][0])
        if first["type"] == "extra_forbidden":  # read_toml names unknown keys itself; kept for safety
            raise StudyError(f"{path}: unknown key {where(key)}") from None
        field = model.model_fields[key]
        raise StudyError(f"{path}: {where(key)} = {_toml(values[key])}: must be {field.description}") from None


def _toml(value) -> str:
    """A value as the file wrote it."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value)


def read_toml(path: str | Path) -> dict:
    """A study file's settings as StudyConfig fields, each value checked (type and range);
    an unknown key or a bad value is a StudyError naming the file and the key."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise StudyError(f"no study file {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise StudyError(f"{path}: not valid TOML ({e})") from None
    out: dict = {}
    for key, value in raw.items():
        if key == "name":
            out["name"] = value
        elif key == "recipe":
            if not isinstance(value, dict):
                raise StudyError(f"{path}: [recipe] must be a table")
            known = [f.name for f in dataclasses.fields(Recipe)]
            for k in value:
                if k not in known:
                    raise StudyError(f"{path}: unknown key {k!r} in [recipe]; known: {', '.join(known)}")
            out["recipe"] = dict(value)
        elif key in SECTIONS:
            if not isinstance(value, dict):
                raise StudyError(f"{path}: [{key}] must be a table")
            for k, v in value.items():
                if k not in SECTIONS[key]:
                    raise StudyError(f"{path}: unknown key {k!r} in [{key}]; known: {', '.join(SECTIONS[key])}")
                out["source" if (key, k) == ("data", "source") else k] = v
        else:
            raise StudyError(f"{path}: unknown key {key!r}; known: name, {', '.join(SECTIONS)}, recipe")
    section = {"name": "", "source": "[data] "} | {k: f"[{s}] " for s, keys in SECTIONS.items() for k in keys
                                                   if k != "source"}
    recipe = out.pop("recipe", None)
    out = _validated(_Values, out, path, lambda k: f"{section[k]}{k}")
    if recipe is not None:
        out["recipe"] = _validated(_RecipeValues, recipe, path, lambda k: f"[recipe] {k}")
    return out


def resolve(toml: str | Path | None = None, **options) -> StudyConfig:
    """Defaults, then the TOML file, then options that are not None."""
    fields = read_toml(toml) if toml else {}
    fields.update({k: v for k, v in options.items() if v is not None})
    try:
        return StudyConfig(**fields)
    except TypeError as e:
        raise StudyError(str(e)) from None


def saved_config(folder: Path) -> StudyConfig | None:
    """The definition saved in a study folder (study.json), whatever created it; None without one."""
    path = Path(folder) / "study.json"
    if not path.is_file():
        return None
    return StudyConfig.from_json(path.read_text())


def existing_studies(root: str | Path) -> list[str]:
    """Names of the studies under ``root``: folders holding a definition or an Optuna database."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir()
                  if p.is_dir() and ((p / "study.json").is_file() or (p / "optuna.db").is_file()))


def no_study(name: str, where: str | Path, names: list[str]) -> StudyError:
    """The one-line error for a study that does not exist, listing those that do."""
    listing = ", ".join(names) if names else "none yet (`scaling search` creates one)"
    return StudyError(f"no study {name!r} in {where}; studies there: {listing}")


def check_or_save(config: StudyConfig, folder: Path) -> None:
    """Save the resolved definition, or refuse one that differs from the saved one."""
    path = folder / "study.json"
    mine = config.to_dict()
    if path.exists():
        saved = json.loads(path.read_text())
        diff = sorted(k for k in set(saved) | set(mine) if saved.get(k, ADDED.get(k)) != mine.get(k)
                      and k not in EXECUTION + LOCATION)
        if "default" in (saved.get("source"), mine.get("source")) and saved.get("source") != mine.get("source"):
            diff.append("source")
        if diff:
            raise StudyError(
                f"study {config.name!r} exists in {folder} with other settings ({', '.join(sorted(diff))}); "
                f"use another --name, or the same settings to resume it"
            )
        if all(saved.get(k) == mine.get(k) for k in LOCATION):
            return
        # The same study on another machine: its data here (checked against the study's by the search).
    write_text_atomic(path, json.dumps(mine, indent=2))
