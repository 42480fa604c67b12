"""The report's provenance: where the study and the report come from, as (key, value) lines
under the title: the storage, when and by what code the report was made, the code, software,
devices and seeds the trials recorded, the packages of the report's environment, and the
study's data, recipe and grid.
"""

from __future__ import annotations

import contextlib
import datetime
from collections import Counter
from importlib import metadata
from pathlib import Path

from ..study import StudyConfig, StudyError
from .formats import missing, plural
from .load import StudyData

PACKAGES = ("torch", "torchvision", "optuna", "fvcore", "pandas", "matplotlib")


def _masked(url: str) -> str:
    """The storage URL without its password; a SQLite file under the working folder by its
    relative path (a report committed beside its study names no machine's folders)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):])
        with contextlib.suppress(ValueError):
            return f"sqlite:///{path.resolve().relative_to(Path.cwd().resolve())}"
        return url
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def _versions() -> str:
    parts = []
    for pkg in PACKAGES:
        try:
            parts.append(f"{pkg} {metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{pkg} (not installed)")
    return ", ".join(parts)


def _code_text(r) -> str | None:
    if r.code_version is None:
        return None
    return r.code_version + (" with uncommitted changes" if r.code_modified else "")


def _software_text(r) -> str:
    """"Python 3.12.3, torch 2.11.0+cu130, CUDA 13.0, cuDNN 91900" of a trial, or that it recorded none."""
    if not r.software:
        return "not recorded: trained before the records held it"
    v = dict(r.software)
    return (f"Python {v.get('python', '?')}, torch {v.get('torch', '?')}, CUDA {v.get('cuda', '?')}, "
            f"cuDNN {v.get('cudnn', '?')}")


def _tally(values) -> str:
    """"a (3), b (1)": distinct values, most common first."""
    c = Counter(str(v) for v in values if not missing(v) and str(v) != "")
    return ", ".join(f"{v} ({plural(n, 'trial')})" for v, n in c.most_common()) or "not recorded"


def _data_text(config: StudyConfig) -> str:
    if config.source == "default":
        from ..data.synthetic import VERSION

        return (f"the embedded synthetic set (scaling/data/synthetic.py, drawing version {VERSION}, seed 0): "
                f"{config.train_size or 5000:,} training and {config.val_size or 1000:,} validation images, "
                f"10 classes")
    sizes = ""
    if config.train_size or config.val_size:
        sizes = (f"; subsets of {config.train_size or 'all'} training and {config.val_size or 'all'} "
                 "validation images")
    path = Path(config.source).expanduser()
    try:
        if path.is_file():
            from ..data.folder import TarSource

            fp = TarSource(path).fingerprint("train")
            return f"{config.source} (fingerprint {fp}: path, size and modification time){sizes}"
        if path.is_dir():
            return f"{config.source} (a folder; not fingerprinted, which would read every file's metadata){sizes}"
    except OSError:
        pass
    return f"{config.source} (not found where this report was made){sizes}"


def _recipe_text(config: StudyConfig) -> str:
    try:
        r = config.training_recipe()
    except StudyError as e:
        return f"unreadable ({e})"
    parts = [f"{plural(r.epochs, 'epoch')}", f"batch {r.batch_size}",
             f"{r.optimizer.upper() if r.optimizer == 'sgd' else r.optimizer} lr {r.lr:g} per 256 images",
             f"{r.warmup_epochs:g} warm-up epoch{'' if r.warmup_epochs == 1 else 's'}"]
    parts.append("cosine schedule" if r.schedule == "cosine"
                 else f"decay x{r.decay_rate:g} every {r.decay_epochs:g} epochs")
    parts += [f"weight decay {r.weight_decay:g}", f"label smoothing {r.label_smoothing:g}"]
    if r.ema:
        parts.append(f"EMA {r.ema:g}")
    return f"{r.name}: " + ", ".join(parts)


def _grid_text(config: StudyConfig) -> str:
    base = f"B0 at width {config.base_width:g}, depth {config.base_depth:g}, {config.base_resolution} px"
    rng = ", ".join(f"{k} {lo:g}–{hi:g}" for k, (lo, hi) in
                    (("α", config.alpha), ("β", config.beta), ("γ", config.gamma)))
    held = ("nominal FLOPs only" if config.flops_tolerance is None else
            f"realized FLOPs within {100 * config.flops_tolerance:g}% of {config.target:g}^φ × the base's")
    return (f"φ = {config.phi:g}; {rng} in steps of {config.step:g}; α·β²·γ² within {100 * config.tolerance:g}% "
            f"of {config.target:g}; {held}; base {base}; resolutions to multiples of {config.multiple}; "
            f"sampler {config.sampler}" + (f", {config.trials} trials" if config.trials else ""))


def _seeds_text(s: StudyData) -> str:
    seeds = sorted({int(r.seed) for r in s.records if isinstance(r.seed, (int, float))})
    per = f"the search's definition: {s.config.seeds} per network" if s.config else ""
    more = sum(1 for r in s.results.itertuples() if getattr(r, "seeds", 1) and getattr(r, "seeds", 1) > s.config.seeds) \
        if s.config and not s.results.empty and "seeds" in s.results.columns else 0
    if more:
        per += f", {plural(more, 'network')} with more (--only)"
    listed = ", ".join(map(str, seeds)) if seeds else "none recorded"
    return listed + (f" ({per})" if per else "")


def build_provenance(s: StudyData) -> list[tuple[str, str]]:
    """The (key, value) lines under the report's title."""
    from ..objective import code_version

    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [("study", s.name), ("storage", _masked(s.url)),
           ("generated", f"{now} by scaling {code_version()}"),
           ("code version of the trials", _tally(_code_text(r) for r in s.records if r.network is not None)),
           ("software of the trials", _tally(_software_text(r) for r in s.records if r.network is not None)),
           ("packages (report environment)", _versions()),
           ("devices", _tally(r.device for r in s.records if r.network is not None)),
           ("seeds", _seeds_text(s))]
    if s.config is not None:
        out += [("data", _data_text(s.config)), ("recipe", _recipe_text(s.config)), ("grid", _grid_text(s.config))]
    else:
        out.append(("definition", "not found (no readable studies/NAME/study.json, no definition in the storage)"))
    return out
