"""The embedded default data set: textured shapes drawn analytically at any resolution.

How it is made
--------------
Each image shows one object on a background. The class is the pair (shape, texture):

* **shape** (coarse): disc, square, triangle, ring, cross (then crescent, hexagon and
  diamond when more than ten classes are asked for);
* **texture** (fine): a grating of stripes inside the object, running *vertical* or
  *horizontal* (within 15 degrees): a horizontal flip, as in training augmentation,
  keeps the class.

Class ``c`` has shape ``c // 2`` and texture ``c % 2``, so the ten default classes are
``disc_vertical, disc_horizontal, square_vertical, ..., cross_horizontal``. The shape can
be told at 16 px. The stripes have 4 to 18 cycles across the object (log-uniform), 5 to
40 across the image, so at 16 px about 90% of them are lost below the pixel grid, at
32 px about 45%, at 64 px 4% and from 96 px none. Telling the texture needs resolution,
telling the shape under the nuisance below needs a receptive field (depth), and binding
the two needs capacity (width). In a check made while designing the set (CPU, one seed,
``Recipe(epochs=4, batch_size=64, lr=0.4)``, 5,000 training images), B0 scaled to width
and depth 0.25 reached 47% validation accuracy at 16 px, 50% at 32 px and 88% at 48 px;
in so short a run, wider or deeper networks did worse at 32 px (47% at width 0.5, 42% at
depth 0.5): the budget, not the data, limits them there.

Nuisance, drawn per image: the object's position, size (0.45 to 0.8 of the image
width), rotation (up to 15 degrees); the stripes' frequency, phase, angle and contrast;
the background colour (light: 0.55 to 0.95 per channel) and a linear shading across it;
the object's colour (darker than the background by 0.35 to 0.55, hue shifted by up to
0.15 per channel); four faint gratings of random angle and frequency over the whole
image (background clutter, some of it as fine as the texture). The object is always the
darker one: with both polarities, short proxy trainings learnt far more slowly.

The image is a function of continuous coordinates, and every image is drawn from it
*band-limited* for the asked resolution, so the same content exists at every resolution:
edges get the exact box-filter ramp over one pixel, and each grating is attenuated by the
box filter's response at its frequency and removed where it would alias (above 0.4 of
the sampling rate along an axis, tapering to zero at the Nyquist frequency). A 64 px
image resized to 32 px (antialiased) differs from the 32 px image by about 2 grey levels
on average, where two different images differ by about 50: the residue is what the
resizing filter lets alias. Gratings are rank-2 in (row, column), so they are drawn as
batched matrix products; only the shape mask is computed per pixel. 6,000 images at
64 px take about 0.4 s on two CPU cores, at 128 px about 1.3 s.

Per-image parameters come from NumPy's PCG64 seeded with (seed, split, block of 1024
images), so image ``i`` of a split depends only on the seed, the split and ``i``: not on
the resolution nor on how many images are asked for. Labels are ``i % num_classes``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

VERSION = 3  # bump when the drawing changes: it is part of the cache key
SHAPES = ("disc", "square", "triangle", "ring", "cross", "crescent", "hexagon", "diamond")
TEXTURES = ("vertical", "horizontal")  # the way the stripes run; a horizontal flip keeps it
MAX_CLASSES = len(SHAPES) * len(TEXTURES)
BLOCK = 1024  # images per seeded block of parameters
SPLIT_IDS = {"train": 0, "val": 1}
CLUTTER = 4  # faint gratings over the whole image

# ---------------------------------------------------------------------------- parameters


def class_names(num_classes: int = 10) -> list[str]:
    """Names of the first ``num_classes`` classes, in label order."""
    _check_classes(num_classes)
    return [f"{SHAPES[c // 2]}_{TEXTURES[c % 2]}" for c in range(num_classes)]


def _check_classes(num_classes: int) -> None:
    if not 2 <= num_classes <= MAX_CLASSES:
        raise ValueError(f"num_classes must lie in [2, {MAX_CLASSES}], got {num_classes}")


def _block_params(seed: int, split: str, block: int, num_classes: int) -> dict[str, np.ndarray]:
    """Parameters of images ``block * BLOCK .. (block + 1) * BLOCK - 1`` of a split."""
    rng = np.random.Generator(np.random.PCG64([seed, SPLIT_IDS[split], block]))
    n = BLOCK
    u = lambda lo, hi, *shape: rng.uniform(lo, hi, size=(n, *shape))  # noqa: E731
    labels = (np.arange(block * n, (block + 1) * n) % num_classes).astype(np.int64)
    size = u(0.45, 0.8)  # object diameter / image width
    radius = size  # in units where the image spans [-1, 1]
    reach = 0.95 - radius
    centre = rng.uniform(-1, 1, size=(n, 2)) * reach[:, None]
    angle = np.deg2rad(u(-15, 15))
    cycles = np.exp(u(np.log(4), np.log(18)))  # stripes across the object's diameter (log-uniform)
    freq = cycles / size  # cycles per image width
    across = np.where(labels % 2 == 0, 0.0, np.pi / 2)  # wave vector: along x (vertical stripes) or y
    tex_angle = across + np.deg2rad(u(-15, 15))
    bg = u(0.55, 0.95, 3)
    fg = np.clip(bg - u(0.35, 0.55)[:, None] + u(-0.15, 0.15, 3), 0.05, 1.0)  # darker, another hue
    return dict(
        labels=labels,
        shape=labels // 2,
        centre=centre,
        radius=radius,
        angle=angle,
        tex_freq=freq,
        tex_angle=tex_angle,
        tex_phase=u(0, 2 * np.pi),
        tex_amp=u(0.08, 0.16),
        bg=bg,
        fg=fg,
        shade=u(-0.1, 0.1, 2),
        clutter_freq=u(2, 40, CLUTTER),
        clutter_angle=u(0, np.pi, CLUTTER),
        clutter_phase=u(0, 2 * np.pi, CLUTTER),
        clutter_amp=u(0.005, 0.03, CLUTTER),
    )


def draw_params(n: int, seed: int, split: str, num_classes: int, start: int = 0) -> dict[str, np.ndarray]:
    """Parameters of images ``start .. start + n - 1`` of a split, as NumPy arrays."""
    if split not in SPLIT_IDS:
        raise ValueError(f"split must be one of {tuple(SPLIT_IDS)}, got {split!r}")
    _check_classes(num_classes)
    first, last = start // BLOCK, (start + n - 1) // BLOCK
    blocks = [_block_params(seed, split, b, num_classes) for b in range(first, last + 1)]
    lo = start - first * BLOCK
    return {k: np.concatenate([b[k] for b in blocks])[lo : lo + n] for k in blocks[0]}


# ---------------------------------------------------------------------------- drawing


def _box_response(fx: torch.Tensor, fy: torch.Tensor, resolution: int) -> torch.Tensor:
    """Gain of a grating with per-axis frequencies (cycles per image width) at this size.

    The box filter of one pixel (sinc in each axis), times a taper from 0.4 to 0.5 of
    the sampling rate so that nothing aliases.
    """
    gain = torch.ones_like(fx)
    for f in (fx.abs() / resolution, fy.abs() / resolution):
        taper = ((0.5 - f) / 0.1).clamp(0, 1)
        gain = gain * torch.sinc(f) * taper
    return gain


def _gratings(coords: torch.Tensor, freq, angle, phase, amp, resolution: int) -> torch.Tensor:
    """Sum of band-limited gratings, (n, R, R), as a batched product of rank-2 factors.

    ``amp * cos(a x + b y + phase) = amp * (cos(b y + phase) cos(a x) - sin(b y + phase) sin(a x))``
    with x along columns and y along rows; coordinates span [-1, 1].
    """
    fx, fy = freq * torch.cos(angle), freq * torch.sin(angle)  # (n, k) cycles per width
    amp = amp * _box_response(fx, fy, resolution)
    a, b = math.pi * fx, math.pi * fy  # radians per unit: width 2 holds `freq` cycles
    ax = a[..., None] * coords  # (n, k, R)
    by = b[..., None] * coords + phase[..., None]
    rows = torch.cat([torch.cos(by), -torch.sin(by)], dim=1) * torch.cat([amp, amp], 1)[..., None]
    cols = torch.cat([torch.cos(ax), torch.sin(ax)], dim=1)
    return torch.bmm(rows.transpose(1, 2), cols)  # (n, R, 2k) @ (n, 2k, R)


def _polygon(qx, qy, sides: int, apothem: float, offset: float) -> torch.Tensor:
    """Distance bound to a regular polygon (exact inside and off the edges)."""
    d = None
    for i in range(sides):
        t = offset + 2 * math.pi * i / sides
        e = qx * math.cos(t) + qy * math.sin(t)
        d = e if d is None else torch.maximum(d, e)
    return d - apothem


def _sdf(shape: str, qx: torch.Tensor, qy: torch.Tensor) -> torch.Tensor:
    """Signed distance to a shape of radius about 1 in object coordinates (y down)."""
    if shape == "disc":
        return torch.hypot(qx, qy) - 0.95
    if shape == "square":
        return torch.maximum(qx.abs(), qy.abs()) - 0.8
    if shape == "triangle":  # pointing up
        return _polygon(qx, qy, 3, 0.55, math.pi / 2)
    if shape == "ring":
        return (torch.hypot(qx, qy) - 0.7).abs() - 0.3
    if shape == "cross":
        bar = lambda hx, hy: torch.maximum(qx.abs() - hx, qy.abs() - hy)  # noqa: E731
        return torch.minimum(bar(1.0, 0.33), bar(0.33, 1.0))
    if shape == "crescent":
        return torch.maximum(torch.hypot(qx, qy) - 1.0, 0.8 - torch.hypot(qx - 0.5, qy))
    if shape == "hexagon":
        return _polygon(qx, qy, 6, 0.85, 0.0)
    if shape == "diamond":
        return _polygon(qx, qy, 4, 0.7, math.pi / 4)
    raise ValueError(f"unknown shape {shape!r}")


def render(params: dict[str, np.ndarray], resolution: int) -> torch.Tensor:
    """Draw images from their parameters: uint8, (n, 3, R, R).

    Args:
        params: from :func:`draw_params` (any slice of it along the first axis).
        resolution: image size R in pixels.
    """
    p = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in params.items()}
    p = {k: v.float() if v.is_floating_point() else v for k, v in p.items()}
    n, r = len(p["labels"]), resolution
    coords = (torch.arange(r, dtype=torch.float32) + 0.5) * (2.0 / r) - 1.0  # pixel centres
    pixel = 2.0 / r

    # background shading, clutter and the object's texture: sums of gratings
    sx, sy = p["shade"][:, 0, None, None], p["shade"][:, 1, None, None]
    light = sx * coords[None, None, :] + sy * coords[None, :, None]
    light += _gratings(coords, p["clutter_freq"], p["clutter_angle"], p["clutter_phase"],
                       p["clutter_amp"], r)
    texture = _gratings(coords, p["tex_freq"][:, None], p["tex_angle"][:, None],
                        p["tex_phase"][:, None], p["tex_amp"][:, None], r)

    # the object's coverage of each pixel: a one-pixel ramp across its edge
    cover = torch.empty(n, r, r)
    for s, name in enumerate(SHAPES):
        idx = (p["shape"] == s).nonzero().flatten()
        if len(idx) == 0:
            continue
        cx, cy = p["centre"][idx, 0, None, None], p["centre"][idx, 1, None, None]
        rad = p["radius"][idx, None, None]
        c, sn = torch.cos(p["angle"][idx])[:, None, None], torch.sin(p["angle"][idx])[:, None, None]
        dx, dy = coords[None, None, :] - cx, coords[None, :, None] - cy
        qx, qy = (c * dx + sn * dy) / rad, (c * dy - sn * dx) / rad
        dist = _sdf(name, qx, qy) * rad
        cover[idx] = (0.5 - dist / pixel).clamp_(0, 1)

    bg, fg = p["bg"][:, :, None, None], p["fg"][:, :, None, None]
    img = bg + light[:, None] + cover[:, None] * (fg - bg + texture[:, None])
    return img.mul_(255).round_().clamp_(0, 255).to(torch.uint8)


def generate(n: int, resolution: int, *, seed: int = 0, split: str = "train", num_classes: int = 10,
             chunk: int | None = None, out: torch.Tensor | None = None,
             progress=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels of the default data set.

    Args:
        n: number of images.
        resolution: image size R in pixels.
        seed: any non-negative integer; the same seed gives identical tensors.
        split: ``"train"`` or ``"val"``: independent draws.
        num_classes: 2 to 16.
        chunk: images drawn at once (default: about 2 M pixels' worth).
        out: a uint8 (n, 3, R, R) tensor to draw into (a memory-mapped file, say).
        progress: called after each chunk with the number of images it drew.

    Returns:
        uint8 images (n, 3, R, R) and int64 labels (n,).

    Example:
        >>> x, y = generate(20, 32, seed=1)
        >>> x.shape, x.dtype, y[:4].tolist()
        (torch.Size([20, 3, 32, 32]), torch.uint8, [0, 1, 2, 3])
    """
    if n < 1 or resolution < 1:
        raise ValueError(f"n and resolution must be positive, got {n}, {resolution}")
    chunk = chunk or max(16, (1 << 21) // (resolution * resolution))
    images = torch.empty(n, 3, resolution, resolution, dtype=torch.uint8) if out is None else out
    if images.shape != (n, 3, resolution, resolution) or images.dtype != torch.uint8:
        raise ValueError(f"out must be uint8 {(n, 3, resolution, resolution)}, "
                         f"got {images.dtype} {tuple(images.shape)}")
    params = draw_params(n, seed, split, num_classes)
    for lo in range(0, n, chunk):
        part = {k: v[lo : lo + chunk] for k, v in params.items()}
        images[lo : lo + chunk] = render(part, resolution)
        if progress is not None:
            progress(len(part["labels"]))
    return images, torch.from_numpy(params["labels"])
