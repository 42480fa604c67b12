"""`scaling cache`: list the caches under the one cache root, and clear them."""

from __future__ import annotations

import time
from typing import Annotated, Optional

import typer

from .app import InputError, _table, app, console

DAY = 86400.0


@app.command("cache")
def cache_command(
    clear: Annotated[bool, typer.Option("--clear", help="Delete the caches listed (all, or those of --older-than).")] = False,
    older_than: Annotated[Optional[float], typer.Option(
        "--older-than", min=0, metavar="DAYS", help="Only the caches last used more than DAYS days ago.")] = None,
):
    """List the data caches (one per source, split and size cap) and the counts' cache, with their sizes.

    The root is $SCALING_CACHE, else the user cache folder (~/.cache/scaling, or under
    $XDG_CACHE_HOME). Example: scaling cache   |   scaling cache --clear --older-than 30
    """
    from ..cache import resolve_root
    from ..data import cache

    root, why = resolve_root()
    if root is None:
        raise InputError(f"no usable cache folder ({why})")
    now = time.time()
    rows = []  # (kind, name, images, sizes, bytes, last used, files)
    data = root / "data"
    for e in cache.entries(data):
        h = e.header
        if h is not None:
            sizes = ", ".join(f"{p['side']}" for p in h.get("parts", [])[:4]) + (" ..." if len(h.get("parts", [])) > 4 else "")
            rows.append(("data", e.stem, f"{h.get('num_images', 0):,}", sizes, e.bytes, e.last_used, e.files))
        else:
            rows.append(("partial", e.stem, "-", "-", e.bytes, e.last_used, e.files))
    for p in sorted((root / "counts").glob("*.json")) if (root / "counts").is_dir() else []:
        st = p.stat()
        rows.append(("counts", p.name, "-", "-", st.st_size, st.st_mtime, [p]))
    if older_than is not None:
        rows = [r for r in rows if now - r[5] > older_than * DAY]
    total = sum(r[4] for r in rows)
    if clear:
        removed = 0
        for kind, name, *_, files in rows:
            if kind == "data":
                cache.remove(data, name)
            else:
                for f in files:
                    f.unlink(missing_ok=True)
            removed += 1
        stale = cache.clean_stale(data) if data.is_dir() else []
        if older_than is None and data.is_dir():
            for lock in data.glob("*.lock"):
                lock.unlink(missing_ok=True)
        console.print(f"removed {removed} cache entr{'y' if removed == 1 else 'ies'} ({total / 1e6:,.1f} MB) "
                      f"and {len(stale)} temporary file{'' if len(stale) == 1 else 's'} from {root}")
        return
    table = _table(f"caches in {root}", [("kind", "left"), ("entry", "left"), ("images", "right"),
                                         ("stored px", "right"), ("MB", "right"), ("last used", "right")],
                   [[k, n, i, s, f"{b / 1e6:,.1f}", time.strftime("%Y-%m-%d %H:%M", time.localtime(u))]
                    for k, n, i, s, b, u, _ in rows],
                   caption=f"{len(rows)} entr{'y' if len(rows) == 1 else 'ies'}, {total / 1e6:,.1f} MB; "
                           "scaling cache --clear [--older-than DAYS] deletes them")
    console.print(table)
