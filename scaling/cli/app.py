"""The Typer app, its one-line error handling and helpers shared by the commands."""

from __future__ import annotations

import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from ..errors import InputError  # the library's (memory.py raises it too); commands import it from here
from ..files import write_text_atomic
from ..units import plural

# Logs and pipes get a wide table rather than one squeezed to 80 columns.
console = Console(width=None if sys.stdout.isatty() else 180)
err = Console(stderr=True)


class OneLineErrors(TyperGroup):
    """Bad input ends with one line on stderr and exit code 2, never a traceback; -h shows no
    type column for on/off flags (Typer's rich help would print <bool> after each, -h too)."""

    def get_command(self, ctx, cmd_name):
        cmd = super().get_command(ctx, cmd_name)
        if cmd is not None:
            _untyped_flags(cmd, ctx)
        return cmd

    def format_help(self, ctx, formatter):
        _untyped_flags(self, ctx)
        return super().format_help(ctx, formatter)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            rv = super().main(args=args, prog_name=prog_name or "scaling", complete_var=complete_var,
                              standalone_mode=False, **extra)
        except typer.Exit as e:
            sys.exit(e.exit_code)
        except typer.Abort:
            err.print("aborted")
            sys.exit(130)
        except _CLICK_ERRORS as e:
            if type(e).__name__ == "NoArgsIsHelpError":
                console.print(e.format_message(), markup=False, highlight=False)
                sys.exit(0)
            err.print(f"error: {e.format_message()}", markup=False, highlight=False, soft_wrap=True)
            sys.exit(2)
        except InputError as e:
            err.print(f"error: {e}", markup=False, highlight=False, soft_wrap=True)
            sys.exit(2)
        if isinstance(rv, int) and not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


def _untyped_flags(cmd, ctx) -> None:
    """An empty metavar for each on/off flag (the help option included): nothing in the type column."""
    for param in cmd.get_params(ctx):
        if getattr(param, "is_flag", False) and getattr(param, "metavar", "") is None:
            param.metavar = ""


# Typer 0.26 and later vendor click as typer._click (and no longer install click); older Typer
# raises click's own exceptions. typer.BadParameter is that click's, so its bases name the right class.
_CLICK_ERRORS = tuple(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")




app = typer.Typer(
    cls=OneLineErrors,
    help="Compound-scaling studies of ConvNets, in the manner of EfficientNet.",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish, PowerShell
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        from .. import __version__

        try:
            v = version("scaling")
        except PackageNotFoundError:  # run from a source tree that is not installed
            v = __version__
        console.print(f"scaling {v}", markup=False, highlight=False)
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    pass


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


class By(str, Enum):
    total = "total"
    stage = "stage"
    layer = "layer"


# ---------------------------------------------------------------------------- helpers


def _range(text: str, option: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.replace(":", ",").split(","))
    except ValueError:
        raise typer.BadParameter(f"needs LOW,HIGH such as 1,1.5; got {text!r}", param_hint=option)
    if not 1.0 <= lo <= hi:
        raise typer.BadParameter(f"needs 1 <= LOW <= HIGH; got {text!r}", param_hint=option)
    return lo, hi


def _check_output(path: Optional[Path]) -> None:
    """Refuse an output path that cannot be written, before any work is done."""
    if path is None:
        return
    if path.is_dir():
        raise typer.BadParameter(f"{path} is a directory; give a file path", param_hint="--output")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise typer.BadParameter(f"folder {parent} does not exist", param_hint="--output")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise typer.BadParameter(f"{path} is not writable", param_hint="--output")


def _emit(df, fmt: Format, output: Optional[Path], show) -> None:
    """Print the rows (rich table, CSV or JSON) and, with --output, also write them to that file:
    as --format says, or for a table as the file's extension says (.json, else CSV)."""
    if output is not None:
        kind = fmt.value if fmt != Format.table else ("json" if output.suffix == ".json" else "csv")
        text = df.to_json(orient="records", indent=2) + "\n" if kind == "json" else df.to_csv(index=False)
        write_text_atomic(output, text)
        err.print(f"wrote {plural(len(df), 'row')} to {output}", markup=False, highlight=False, soft_wrap=True)
    if fmt == Format.csv:
        sys.stdout.write(df.to_csv(index=False))
    elif fmt == Format.json:
        sys.stdout.write(df.to_json(orient="records", indent=2) + "\n")
    else:
        show()




def _ends(channels: str) -> str:
    if not channels:  # a user's network: its structure is its function's
        return "-"
    parts = channels.split("-")
    return f"{parts[0]}/{parts[-1]}"


BaseOpt = Annotated[Optional[str], typer.Option(
    "--base", metavar="NAME|module:function",
    help="The base network: efficientnet-b0 (default), resnet50, mobilenetv2, or module:function (your "
         "function, called with width= and depth= and num_classes= where it takes it, returning an nn.Module).")]


def _base(name: Optional[str]):
    """The base ``--base`` names (:func:`scaling.bases.get_base`); a bad one ends in one line, exit code 2."""
    from ..bases import DEFAULT, BaseError, get_base

    try:
        return get_base(name or DEFAULT)
    except BaseError as e:
        raise InputError(f"--base: {e}")


def _g(flops: int) -> str:
    return f"{flops / 1e9:.3f}"


def _f(flops, scale: float) -> str:
    return f"{flops / scale:.3f}" if scale == 1e9 else f"{flops / scale:.2f}"


def _m(params: int) -> str:
    return f"{params / 1e6:.2f}"


def _table(title: str, columns: list[tuple[str, str]], rows: list[list[str]], caption: str = "") -> Table:
    t = Table(title=title, caption=caption, title_justify="left", caption_justify="left")
    for name, justify in columns:
        t.add_column(name, justify=justify)
    for r in rows:
        t.add_row(*r)
    return t


def _check_output_path(path: Path, option: str) -> None:
    try:
        _check_output(path)
    except typer.BadParameter as e:
        raise typer.BadParameter(e.message, param_hint=option)
