"""Tests of scaling.data: the default set, folders and archives, the cache, batches."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from scaling.data import Batches, DataError, DataSet, Split, channel_stats, load_data
from scaling.data import load as load_module
from scaling.data import synthetic

CIFAR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cifar10-jpeg.tar.gz"
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


CLASSES = ("cat", "dog", "eel")  # a distinct colour each: red, green, blue
COLOURS = {"cat": (200, 30, 30), "dog": (30, 200, 30), "eel": (30, 30, 200)}
# bad files planted in train/, relative to the folder's root
BAD = (
    "train/cat/corrupt.png",
    "train/dog/empty.jpg",
    "train/dog/notes.txt",
    "train/eel/truncated.jpg",
    "train/stray.jpg",
)


def _image_bytes(colour, size=(20, 14), mode="RGB", fmt="PNG", seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour)[None, None] + rng.integers(-10, 11, (size[1], size[0], 3)), 0, 255)
    im = Image.fromarray(pixels.astype(np.uint8)).convert(mode)
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()


def make_folder(root: Path, *, bad: bool = True, val: str | None = "val", train_per_class: int = 4,
                val_per_class: int = 2) -> Path:
    """Write a tiny ImageFolder layout under ``root``; return ``root``.

    Images of class k are noisy flat colours (``COLOURS``), in varied sizes, modes
    (RGB, RGBA, L) and formats (PNG, JPEG). With ``bad``, the files of ``BAD``.
    """
    layouts = [((20, 14), "RGB", "PNG"), ((9, 16), "RGBA", "PNG"), ((32, 32), "RGB", "JPEG"), ((40, 25), "L", "JPEG")]
    splits = {"train": train_per_class} | ({val: val_per_class} if val else {})
    for split, count in splits.items():
        for cls in CLASSES:
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(count):
                size, mode, fmt = layouts[i % len(layouts)]
                colour = COLOURS[cls]
                if mode == "L":
                    colour = (sum(colour) // 3,) * 3
                ext = "jpg" if fmt == "JPEG" else "png"
                (folder / f"{i:03d}.{ext}").write_bytes(_image_bytes(colour, size, mode, fmt, seed=i))
    if bad:
        good = _image_bytes((1, 2, 3), fmt="JPEG")
        png = _image_bytes((1, 2, 3), fmt="PNG")
        (root / "train/cat/corrupt.png").write_bytes(png[:60] + bytes(200) + png[260:])
        (root / "train/dog/empty.jpg").write_bytes(b"")
        (root / "train/dog/notes.txt").write_text("not an image\n")
        (root / "train/eel/truncated.jpg").write_bytes(good[: len(good) // 2])
        (root / "train/stray.jpg").write_bytes(good)
        (root / "train/cat/._000.png").write_bytes(b"\0\5\26\7")  # hidden: ignored, not bad
    return root


def make_tar(folder: Path, out: Path, *, compress: bool = True, wrap: str | None = None) -> Path:
    """Pack ``folder`` into a tar archive (gzip-compressed unless told), optionally under ``wrap/``."""
    with tarfile.open(out, "w:gz" if compress else "w") as tar:
        tar.add(folder, arcname=wrap or ".")
    return out


@pytest.fixture
def tiny(tmp_path) -> Path:
    """A tiny ImageFolder layout: 3 classes, 4 train and 2 val images each, and the bad files of ``BAD``."""
    return make_folder(tmp_path / "tiny")


@pytest.fixture(autouse=True)
def _cache(data_cache):
    """Every test gets its own cache folder through $SCALING_CACHE."""
    return data_cache


def _entries(cache: Path) -> dict[str, int]:
    """The files of the data cache under the root ``cache`` (lock files aside), with their modification
    times (headers aside: using an entry touches its header)."""
    return {p.name: 0 if p.suffix == ".json" else p.stat().st_mtime_ns for p in sorted((cache / "data").iterdir())
            if not p.name.endswith(".lock")}


def _same(a: Split, b: Split) -> bool:
    """Equal stored images (every part) and labels."""
    return (len(a.parts) == len(b.parts) and all(torch.equal(x, y) for x, y in zip(a.parts, b.parts))
            and torch.equal(a.labels, b.labels))


def _eval_images(split: Split) -> torch.Tensor:
    """The split's evaluation batches at its resolution, as pixel values in [0, 255]."""
    b = Batches(split, 64, train=False, device="cpu")
    return torch.cat([_values(x, b) for x, _ in b])


# ---------------------------------------------------------------------------- the default set


def test_default_is_deterministic():
    a = load_data(None, 24, cache_dir=False, train_size=120, val_size=40, quiet=True)
    b = load_data("default", 24, cache_dir=False, train_size=120, val_size=40, quiet=True)
    c = load_data(None, 24, cache_dir=False, train_size=120, val_size=40, seed=1, quiet=True)
    for s in ("train", "val"):
        assert _same(getattr(a, s), getattr(b, s))
        assert getattr(a, s).fingerprint == getattr(b, s).fingerprint != getattr(c, s).fingerprint
        assert not torch.equal(getattr(a, s).images, getattr(c, s).images)
    assert not torch.equal(a.train.images[:40], a.val.images)  # the splits are separate draws


def test_default_counts_and_balanced_classes(data_cache):
    data = load_data(None, 16, quiet=True)
    assert isinstance(data, DataSet) and data.name == "default" and data.resolution == 16
    # stored once at the smallest cap holding 16 px, batched at 16 px
    assert data.train.images.shape == (5000, 3, 32, 32) and data.train.images.dtype == torch.uint8
    assert data.val.images.shape == (1000, 3, 32, 32) and data.train.resolution == data.val.resolution == 16
    x, _ = next(iter(Batches(data.val, 10, train=False, device="cpu")))
    assert x.shape == (10, 3, 16, 16)
    assert data.num_classes == 10 and data.train.classes == data.val.classes == synthetic.class_names(10)
    assert data.train.classes[:3] == ["disc_vertical", "disc_horizontal", "square_vertical"]
    assert data.train.counts() == [500] * 10 and data.val.counts() == [100] * 10
    assert data.train.skipped == [] and data.train.labels.dtype == torch.int64
    small = load_data(None, 16, train_size=33, val_size=7, quiet=True)
    assert len(small.train) == 33 and len(small.val) == 7
    assert max(small.train.counts()) - min(small.train.counts()) <= 1


def test_default_same_content_at_two_resolutions():
    hi, _ = synthetic.generate(64, 64, seed=3)
    lo, _ = synthetic.generate(64, 32, seed=3)
    other, _ = synthetic.generate(64, 32, seed=4)
    down = F.interpolate(hi.float(), size=32, mode="bilinear", antialias=True, align_corners=False)
    same = (down - lo.float()).abs().mean().item()
    differ = (lo.float() - other.float()).abs().mean().item()
    assert same < 3.0, same  # grey levels: what the filter lets alias, rounding, clipping
    assert differ > 15 * same


def test_default_image_depends_on_index_not_count():
    a, ya = synthetic.generate(10, 16, seed=5)
    b, yb = synthetic.generate(1500, 16, seed=5)  # crosses a parameter block
    assert torch.equal(a, b[:10]) and torch.equal(ya, yb[:10])
    params = synthetic.draw_params(5, 5, "train", 10, start=1030)
    assert torch.equal(synthetic.render(params, 16), b[1030:1035])


def test_default_fine_texture_needs_resolution():
    """The stripes that tell the two textures apart fade out at low resolution."""
    params = synthetic.draw_params(200, 0, "train", 10)
    plain = dict(params, tex_amp=np.zeros_like(params["tex_amp"]))
    strength = {}
    for r in (16, 32, 64):
        stripes = synthetic.render(params, r).float() - synthetic.render(plain, r).float()
        strength[r] = stripes.abs().mean().item()
    assert strength[16] < 0.3 * strength[64] and strength[16] < strength[32] < strength[64]


def test_default_is_cached(data_cache, monkeypatch):
    first = load_data(None, 16, train_size=50, val_size=20, quiet=True)
    before = _entries(data_cache)
    assert len(before) == 6  # images, labels, header for each split
    monkeypatch.setattr(synthetic, "render", lambda *a, **k: pytest.fail("drew again"))
    second = load_data(None, 16, train_size=50, val_size=20, quiet=True)
    third = load_data(None, 30, train_size=50, val_size=20, quiet=True)  # the one cache serves 30 px too
    assert _entries(data_cache) == before
    assert _same(first.train, second.train) and _same(first.train, third.train) and third.resolution == 30


# ---------------------------------------------------------------------------- folders and archives


def _check_tiny(data: DataSet):
    assert data.train.classes == data.val.classes == list(CLASSES)
    assert data.train.counts() == [4, 4, 4] and data.val.counts() == [2, 2, 2]
    # each image at its own size, the centre square of its shorter side: 9, 14, 25 and 32 px
    assert data.train.sides == [9, 14, 25, 32] and [len(x) for x in data.train.parts] == [3, 3, 3, 3]
    assert data.val.sides == [9, 14]
    assert data.train.skipped == sorted(BAD)
    assert data.val.skipped == []
    for x, y in zip(_eval_images(data.val), data.val.labels):  # each class's colour survives, at 16 px
        assert x.shape == (3, 16, 16)
        colour = np.array(COLOURS[CLASSES[y]])
        assert np.abs(x.float().mean((1, 2)).numpy() - colour).max() < 12


def test_folder_loads_and_skips_bad_files(tiny):
    data = load_data(tiny, 16, quiet=True)
    assert data.name == "tiny" and data.resolution == 16
    _check_tiny(data)


@pytest.mark.parametrize("compress, wrap", [(True, None), (False, None), (True, "tiny")])
def test_archive_matches_folder(tiny, tmp_path, compress, wrap):
    from_folder = load_data(tiny, 16, quiet=True)
    path = make_tar(tiny, tmp_path / ("tiny.tar.gz" if compress else "tiny.tar"), compress=compress, wrap=wrap)
    archive = load_data(path, 16, quiet=True)
    assert archive.name == "tiny"
    prefix = f"{wrap}/" if wrap else ""
    assert archive.train.skipped == [prefix + p for p in sorted(BAD)]
    for s in ("train", "val"):
        assert _same(getattr(from_folder, s), getattr(archive, s))


def test_worker_processes_give_the_same_tensors(tiny, tmp_path):
    one = load_data(tiny, 16, quiet=True, workers=0, cache_dir=tmp_path / "a")
    two = load_data(tiny, 16, quiet=True, workers=2, cache_dir=tmp_path / "b")
    assert _same(one.train, two.train) and one.train.skipped == two.train.skipped


def test_resize_is_centre_square_then_bilinear(tmp_path):
    root = make_folder(tmp_path / "src", bad=False, train_per_class=1, val_per_class=1)
    # a wide image: red | green | blue thirds; its centre square is mostly green
    wide = np.zeros((30, 60, 3), np.uint8)
    wide[:, :20, 0] = wide[:, 20:40, 1] = wide[:, 40:, 2] = 255
    Image.fromarray(wide).save(root / "val" / "cat" / "001.png")
    data = load_data(root, 12, quiet=True)
    assert data.val.sides == [14, 30]  # val/cat/000.png is 20 x 14; the wide one 60 x 30
    stored = data.val.parts[1][0].float()  # its centre square, columns 15..45: red 15..20, blue 40..45
    assert stored[1, :, 5:25].min() == 255 and stored[0, :, :5].min() == 255 and stored[2, :, 25:].min() == 255
    x = _eval_images(data.val)[-1]  # the split runs by stored size; resized to 12 px on the device
    assert torch.equal(data.val.labels, torch.tensor([0, 1, 2, 0]))
    assert x[1, :, 3:9].min() > 254.9 and x[0, :, 3:9].max() < 0.1  # green middle
    assert x[0, :, 0].min() > 100 and x[2, :, -1].min() > 100  # a sliver of red left, of blue right
    assert x[2, :, 0].max() < 0.1 and x[0, :, -1].max() < 0.1


def test_strict_raises_on_the_first_bad_file(tiny, tmp_path):
    with pytest.raises(DataError, match="train/stray.jpg"):  # found while listing, before decoding
        load_data(tiny, 16, strict=True, quiet=True)
    (tiny / "train" / "stray.jpg").unlink()
    with pytest.raises(DataError, match="train/cat/corrupt.png"):
        load_data(tiny, 16, strict=True, quiet=True, workers=0)
    with pytest.raises(DataError, match="bad image train/"):  # whichever worker reports first
        load_data(tiny, 16, strict=True, quiet=True, workers=2)
    assert not any(p for p in (tiny.parent / "cache").rglob("*") if "tmp" in p.name)


def test_strict_refuses_a_cache_with_skipped_files(tiny, data_cache):
    load_data(tiny, 16, quiet=True)
    with pytest.raises(DataError, match=r"train/cat/corrupt.png.*5 bad files"):
        load_data(tiny, 16, strict=True, quiet=True)


def test_empty_class_folder_is_an_error(tiny, data_cache):
    load_data(tiny, 16, quiet=True)
    (tiny / "val" / "fox").mkdir()  # after a load: the cached entry must not hide it
    with pytest.raises(DataError, match="empty class folder val/fox/"):
        load_data(tiny, 16, quiet=True)
    assert not any(data_cache.rglob("*tmp*")), "temporary files left behind"


def test_hidden_files_and_folders_are_ignored(tiny):
    (tiny / "train" / ".ipynb_checkpoints").mkdir()
    (tiny / "val" / "dog" / ".DS_Store").write_bytes(b"\0\1")
    _check_tiny(load_data(tiny, 16, quiet=True))


def test_class_with_only_bad_files_is_an_error(tiny):
    for p in (tiny / "val" / "eel").iterdir():
        p.write_bytes(b"junk")
    with pytest.raises(DataError, match="val/eel"):
        load_data(tiny, 16, quiet=True)


def test_missing_split_is_an_error(tmp_path):
    root = make_folder(tmp_path / "noval", val=None)
    with pytest.raises(DataError, match=r"missing split.*val/"):
        load_data(root, 16, quiet=True)
    shutil.move(root / "train", root / "training")
    (root / "val").mkdir()
    with pytest.raises(DataError, match=r"missing split.*train/"):
        load_data(root, 16, quiet=True)
    with pytest.raises(DataError, match="not found"):
        load_data(tmp_path / "nowhere", 16, quiet=True)


def test_test_folder_serves_as_val_and_classes_must_match(tmp_path):
    root = make_folder(tmp_path / "t", bad=False, val="test")
    data = load_data(root, 16, quiet=True)
    assert data.val.counts() == [2, 2, 2]
    shutil.rmtree(root / "test" / "dog")
    (root / "test" / "emu").mkdir()
    Image.new("RGB", (8, 8)).save(root / "test" / "emu" / "a.png")
    with pytest.raises(DataError, match=r"missing from test/: dog; not in train/: emu"):
        load_data(root, 16, quiet=True)


def test_cache_is_hit_the_second_time(tiny, data_cache, monkeypatch):
    first = load_data(tiny, 16, quiet=True)
    before = _entries(data_cache)
    # per split: a header, labels and a file per stored size (train 4, val 2)
    assert len(before) == 2 + 2 + 4 + 2 and not any("tmp" in name for name in before)
    monkeypatch.setattr(load_module, "build", lambda *a, **k: pytest.fail("decoded again"))
    second = load_data(tiny, 16, quiet=True)
    assert _same(first.train, second.train) and second.train.skipped == first.train.skipped
    assert second.train.fingerprint == first.train.fingerprint
    # another resolution is the same entry: no image is capped, so any cap would store the same
    for r in (20, 64, 300):
        assert load_data(tiny, r, quiet=True).train.resolution == r
    assert _entries(data_cache) == before
    monkeypatch.undo()
    monkeypatch.setenv("SCALING_CACHE", str(data_cache))
    # a changed file is another entry
    target = tiny / "train" / "cat" / "000.png"
    os.utime(target, ns=(time.time_ns(), time.time_ns() + 10**9))
    third = load_data(tiny, 16, quiet=True)
    assert third.train.fingerprint != first.train.fingerprint
    assert third.val.fingerprint == first.val.fingerprint  # the val folder did not change
    assert len([n for n in _entries(data_cache) if n.endswith(".json")]) == 3


def test_subsets_of_a_real_source_are_stratified(tiny):
    data = load_data(tiny, 16, train_size=6, val_size=3, seed=2, quiet=True)
    assert data.train.counts() == [2, 2, 2] and data.val.counts() == [1, 1, 1]
    again = load_data(tiny, 16, train_size=6, val_size=3, seed=2, quiet=True)
    assert _same(data.train, again.train) and sum(len(x) for x in data.train.parts) == 6
    with pytest.raises(DataError, match="train_size=13"):
        load_data(tiny, 16, train_size=13, quiet=True)


@pytest.mark.skipif(not CIFAR.exists(), reason=f"CIFAR-10 archive not found at {CIFAR}")
def test_cifar10_archive(tmp_path):
    t = time.perf_counter()
    data = load_data(CIFAR, 128, cache_dir=tmp_path, quiet=True)
    built = time.perf_counter() - t
    assert data.name == "cifar10-jpeg"
    assert data.train.classes == data.val.classes == CIFAR_CLASSES
    # stored once at their own 32 px, whatever the resolution asked: 184 MB
    assert data.train.images.shape == (50_000, 3, 32, 32) and data.val.images.shape == (10_000, 3, 32, 32)
    assert data.train.counts() == [5000] * 10 and data.val.counts() == [1000] * 10
    assert data.train.skipped == [] and data.val.skipped == []
    t = time.perf_counter()
    again = load_data(CIFAR, 224, cache_dir=tmp_path, quiet=True)
    loaded = time.perf_counter() - t
    assert _same(again.val, data.val) and again.resolution == 224
    assert len(list(tmp_path.glob("*.json"))) == 2
    print(f"CIFAR-10: built in {built:.1f} s, loaded from the cache at another resolution in {loaded * 1000:.0f} ms")


# ---------------------------------------------------------------------------- batches


def _indexed_split(n: int = 50, r: int = 8) -> Split:
    """Image i is flat with value i in every channel; its label is i."""
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, r, r).contiguous()
    return Split(images, torch.arange(n), [str(i) for i in range(n)], "indexed")


def _values(x: torch.Tensor, b: Batches) -> torch.Tensor:
    """Undo the normalisation: pixel values in [0, 255]."""
    mean, std = torch.tensor(b.mean).view(1, 3, 1, 1), torch.tensor(b.std).view(1, 3, 1, 1)
    return (x.float() * std + mean) * 255


def test_eval_batches_cover_every_sample_once_in_order():
    split = _indexed_split()
    b = Batches(split, 16, train=False, device="cpu", seed=0)
    assert len(b) == 4
    xs, ys = zip(*b)
    assert [len(y) for y in ys] == [16, 16, 16, 2]
    assert torch.equal(torch.cat(ys), torch.arange(50))
    for x, y in zip(xs, ys):
        assert x.dtype == torch.float32 and x.shape[1:] == (3, 8, 8)
        assert x.is_contiguous(memory_format=torch.channels_last)
        assert torch.allclose(_values(x, b), y.float().view(-1, 1, 1, 1).expand_as(x), atol=1e-3)
    again = list(b)  # the same every epoch
    assert all(torch.equal(x1, x2) for x1, (x2, _) in zip(xs, again))


def test_train_batches_shuffle_augment_and_differ_between_epochs():
    split = _indexed_split()
    b = Batches(split, 16, train=True, device="cpu", seed=7)
    assert len(b) == 3  # the last partial batch is dropped
    e0, e1 = list(b), list(b)
    y0, y1 = torch.cat([y for _, y in e0]), torch.cat([y for _, y in e1])
    assert len(y0.unique()) == 48 and not torch.equal(y0, y1)
    full = Batches(split, 16, train=True, device="cpu", seed=7, drop_last=False)
    assert len(full) == 4 and torch.equal(torch.cat([y for _, y in full]).sort().values, torch.arange(50))
    # reproducible: the same seed and epoch give the same batches
    c = Batches(split, 16, train=True, device="cpu", seed=7)
    c.set_epoch(1)
    assert all(torch.equal(x1, x2) and torch.equal(u1, u2) for (x1, u1), (x2, u2) in zip(e1, c))
    d = Batches(split, 16, train=True, device="cpu", seed=8)
    assert not torch.equal(torch.cat([y for _, y in d]), y0)
    x, _ = e0[0]
    assert x.shape == (16, 3, 8, 8) and x.is_contiguous(memory_format=torch.channels_last)


def test_augmentation_crops_and_flips():
    gradient = torch.arange(16, dtype=torch.uint8).mul(16).expand(4, 3, 16, 16).contiguous()
    split = Split(gradient, torch.zeros(4, dtype=torch.int64), ["a"], "gradient")
    eval_x = next(iter(Batches(split, 4, train=False, device="cpu")))[0]
    # whole-image crops, no flip: the identity
    same = Batches(split, 4, train=True, device="cpu", crop_scale=(1, 1), crop_ratio=(1, 1), flip=False)
    assert torch.allclose(next(iter(same))[0], eval_x, atol=1e-5)
    # whole-image crops with flips: each image is the original or its mirror, both occur
    flips = Batches(split, 4, train=True, device="cpu", crop_scale=(1, 1), crop_ratio=(1, 1), seed=1)
    kinds = set()
    for epoch in range(4):
        for x in next(iter(flips))[0]:
            if torch.allclose(x, eval_x[0], atol=1e-5):
                kinds.add("same")
            else:
                assert torch.allclose(x, eval_x[0].flip(-1), atol=1e-5)
                kinds.add("mirror")
    assert kinds == {"same", "mirror"}
    # small crops zoom in: less range of values per image than the whole gradient
    zoom = Batches(split, 4, train=True, device="cpu", crop_scale=(0.3, 0.3), flip=False)
    x = _values(next(iter(zoom))[0], zoom)
    assert (x.amax((1, 2, 3)) - x.amin((1, 2, 3))).max() < 0.8 * 240


def test_batches_dtype_and_stats(data_tiny_default):
    data = data_tiny_default
    mean, std = channel_stats(data.train)
    b = Batches(data.train, 32, train=True, device="cpu", dtype=torch.bfloat16, mean=mean, std=std)
    x, y = next(iter(b))
    assert x.dtype == torch.bfloat16 and y.dtype == torch.int64 and x.is_contiguous(memory_format=torch.channels_last)
    ev = torch.cat([x for x, _ in Batches(data.train, 32, train=False, device="cpu", mean=mean, std=std)])
    assert abs(ev.mean().item()) < 0.05 and abs(ev.std().item() - 1) < 0.05
    with pytest.raises(ValueError, match="drop_last"):  # 50 images, no full batch
        Batches(data.val, 64, train=True, device="cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("stream", [False, True])
def test_batches_on_a_gpu(stream):
    split = _indexed_split(1000, 16)
    cpu = Batches(split, 64, train=False, device="cpu")
    gpu = Batches(split, 64, train=False, device="cuda", stream=stream, dtype=torch.bfloat16)
    assert gpu.stream is stream and (gpu.images.device.type == "cpu") is stream
    for (xc, yc), (xg, yg) in zip(cpu, gpu):
        assert xg.device.type == "cuda" and xg.dtype == torch.bfloat16
        assert xg.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(yc, yg.cpu()) and torch.allclose(xc, xg.float().cpu(), atol=0.05)
    train = Batches(split, 64, train=True, device="cuda", stream=stream, seed=3)
    ys = torch.cat([y for _, y in train]).cpu()
    assert len(ys) == 960 and len(ys.unique()) == 960
    again = Batches(split, 64, train=True, device="cuda", stream=stream, seed=3)
    assert torch.equal(torch.cat([y for _, y in again]).cpu(), ys)
