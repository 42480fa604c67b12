"""The one cache per source, the device-side resize, memory and disk limits, and bad input to the data."""

from __future__ import annotations

import errno
import io
import json
import logging
import math
import os
import threading
import time
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from typer.testing import CliRunner

from scaling import cache as root_module
from scaling.cli import app
from scaling.complexity import CountCache
from scaling.data import Batches, DataError, NoSpace, Split, cache, load_data, synthetic
from scaling.data import load as load_module
from scaling.data.batches import resize_boxes
from scaling.spec import custom_spec

from test_data import _same, make_folder, make_tar


@pytest.fixture(autouse=True)
def _cache(data_cache, monkeypatch):
    monkeypatch.delenv(load_module.MEMORY_ENV, raising=False)
    root_module._warned.clear()
    return data_cache


@pytest.fixture
def tiny(tmp_path) -> Path:
    return make_folder(tmp_path / "tiny", bad=False)


def _headers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.json"))


def _builds(monkeypatch) -> list[int]:
    """Count the builds of folder sources from now on."""
    calls = []
    real = load_module.build

    def counted(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(load_module, "build", counted)
    return calls


def _smooth(n: int, side: int, seed: int = 0) -> torch.Tensor:
    """uint8 images of smooth random content (low frequencies), (n, 3, side, side)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 6, 6, generator=g) * 255
    return F.interpolate(low, size=side, mode="bicubic", align_corners=False).clamp(0, 255).round().to(torch.uint8)


# ---------------------------------------------------------------------------- one cache, any resolution


def test_one_folder_cache_serves_every_resolution(tmp_path, monkeypatch):
    """Photos larger than the cap are stored at the cap; every resolution up to it reuses that one entry."""
    root = tmp_path / "photos"
    for split, n in (("train", 3), ("val", 1)):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(np.asarray(_smooth(1, 400, i)[0].permute(1, 2, 0))).crop((0, 0, 400, 300)).save(
                    root / split / cls / f"{i}.jpg", quality=95)
    builds = _builds(monkeypatch)
    data = load_data(root, 224, quiet=True)
    folder = Path(os.environ["SCALING_CACHE"]) / "data"
    assert data.train.sides == [256] and builds == [1]  # 300 px short sides, capped at 256
    before = _headers(folder)
    assert len(before) == 2 and all("-cap256-" in h for h in before)
    for r in (64, 128, 200, 256):
        d = load_data(root, r, quiet=True)
        x, _ = next(iter(Batches(d.train, 2, train=True, device="cpu")))
        assert x.shape == (2, 3, r, r) and _same(d.train, data.train)
    assert builds == [1] and _headers(folder) == before
    bigger = load_data(root, 300, quiet=True)  # more than the cap: a cache with a larger one
    assert bigger.train.sides == [288] and builds == [1, 1] and len(_headers(folder)) == 4
    # a study that says its largest resolution up front gets one cache for all its trials
    other = tmp_path / "c2"
    load_data(root, 200, quiet=True, max_resolution=300, cache_dir=other)
    assert all("-cap384-" in h for h in _headers(other)) and len(_headers(other)) == 2


def test_one_default_cache_serves_every_resolution(monkeypatch):
    data = load_data(None, 40, train_size=40, val_size=20, quiet=True)
    assert data.train.sides == [64]
    monkeypatch.setattr(synthetic, "render", lambda *a, **k: pytest.fail("drew again"))
    for r in (33, 48, 64):
        d = load_data(None, r, train_size=40, val_size=20, quiet=True)
        assert _same(d.train, data.train) and d.resolution == r


def test_default_keeps_its_meaning_at_any_resolution():
    """Stored at 64 px and cut to 48 on the device: the images drawn at 48 px, within a few grey levels."""
    data = load_data(None, 48, cache_dir=False, train_size=64, val_size=64, quiet=True)
    assert data.val.sides == [64]
    b = Batches(data.val, 64, train=False, device="cpu", mean=(0, 0, 0), std=(1, 1, 1))
    x = next(iter(b))[0] * 255
    drawn, labels = synthetic.generate(64, 48, seed=0, split="val")
    other, _ = synthetic.generate(64, 48, seed=1, split="val")
    same = (x - drawn.float()).abs().mean().item()
    differ = (drawn.float() - other.float()).abs().mean().item()
    assert same < 3.0 and differ > 10 * same, (same, differ)
    assert torch.equal(data.val.labels, labels)


# ---------------------------------------------------------------------------- the resize on the device


def _pil(images: torch.Tensor, size: int, box=None) -> torch.Tensor:
    """The reference: Pillow's bilinear resize (antialiased when shrinking) of each image alone."""
    return torch.stack([torch.from_numpy(np.array(Image.fromarray(im.permute(1, 2, 0).numpy()).resize(
        (size, size), Image.Resampling.BILINEAR, box=box))).permute(2, 0, 1).float() for im in images])


def _detailed(n: int, side: int) -> torch.Tensor:
    """Smooth images with stripes of period 5 px across them (detail that aliases when shrunk)."""
    y = torch.arange(side).float()
    im = _smooth(n, side).float() * 0.5 + 60 * torch.sin(y * 2 * math.pi / 5)[None, None, :, None] + 60
    return im.clamp(0, 255).round().to(torch.uint8)


@pytest.mark.parametrize("side, size", [(96, 40), (96, 64), (32, 80)])
def test_evaluation_resize_equals_pils(side, size):
    """Whole images resized on the device, down or up: Pillow's resize of each, to a fraction of a grey level."""
    images = _detailed(4, side)
    split = Split(images, torch.arange(4) % 2, ["a", "b"], "detail").at(size)
    x = next(iter(Batches(split, 4, train=False, device="cpu", mean=(0, 0, 0), std=(1, 1, 1))))[0] * 255
    err = (x - _pil(images, size)).abs()
    assert err.mean().item() < 0.5 and err.max().item() < 6, (err.mean().item(), err.max().item())


@pytest.mark.parametrize("method", ["roi", "grid"])
def test_training_crops_equal_pils_crop_and_resize(method):
    """A random resized crop, cut on the device: Pillow's resize of that box of the image alone."""
    images = _smooth(8, 64)
    split = Split(images, torch.arange(8), [str(i) for i in range(8)], "smooth").at(48)  # label = index
    b = Batches(split, 8, train=True, device="cpu", resize=method, flip=False, seed=4, mean=(0, 0, 0), std=(1, 1, 1))
    gen = torch.Generator().manual_seed(batches_seed(4))
    boxes, _ = b._crops(8, torch.full((8,), 64.0), gen)
    order = torch.randperm(8, generator=torch.Generator().manual_seed(order_seed(4)))
    x = next(iter(b))[0] * 255
    for k in range(8):
        ref = _pil(images[order[k]][None], 48, box=tuple(boxes[k].tolist()))[0]
        err = (x[k] - ref).abs()
        assert err.mean().item() < 1.0, (k, err.mean().item())
    # enlarging a whole image: bilinear interpolation, to rounding
    whole = Batches(split.at(80), 8, train=True, device="cpu", resize=method, crop_scale=(1, 1), crop_ratio=(1, 1),
                    flip=False, mean=(0, 0, 0), std=(1, 1, 1))
    xw, yw = next(iter(whole))
    ref = F.interpolate(images.float(), size=80, mode="bilinear", align_corners=False)
    assert (xw * 255 - ref[yw]).abs().max().item() < 1e-2


def batches_seed(seed: int, epoch: int = 0) -> int:
    from scaling.data.batches import _seed

    return _seed(seed, epoch, "augment")


def order_seed(seed: int, epoch: int = 0) -> int:
    from scaling.data.batches import _seed

    return _seed(seed, epoch, "order")


def test_shrinking_crops_are_antialiased_by_roi_align():
    """Training crops shrunk 2.4x: roi_align averages each pixel's footprint; one bilinear sample (grid) aliases."""
    images = _detailed(4, 96)
    split = Split(images, torch.arange(4), ["a", "b", "c", "d"], "detail").at(40)
    ref = _pil(images, 40)
    err = {}
    for method in ("roi", "grid"):
        b = Batches(split, 4, train=True, device="cpu", resize=method, crop_scale=(1, 1), crop_ratio=(1, 1),
                    flip=False, mean=(0, 0, 0), std=(1, 1, 1))
        x, y = next(iter(b))
        err[method] = (x * 255 - ref[y]).abs().mean().item()
    assert err["grid"] > 2 * err["roi"], err


@pytest.mark.parametrize("method", ["roi", "grid"])
def test_a_batch_of_several_sizes_is_each_image_resized_alone(method):
    """Images of 20, 30 and 37 px padded into one batch: each as if resized by itself, edges too."""
    parts = [_smooth(3, 20, 1), _smooth(2, 30, 2), _smooth(3, 37, 3)]
    split = Split(parts, torch.arange(8), [str(i) for i in range(8)], "mixed").at(24)
    ev = next(iter(Batches(split, 8, train=False, device="cpu", mean=(0, 0, 0), std=(1, 1, 1))))[0]
    alone = torch.cat([F.interpolate(p.float(), size=24, mode="bilinear", antialias=True) for p in parts]) / 255
    assert ev.shape == (8, 3, 24, 24) and (ev - alone).abs().max().item() < 1e-5
    # training crops of the whole image (no flips): each image's own crop, as if alone
    whole = Batches(split, 8, train=True, device="cpu", resize=method, crop_scale=(1, 1), crop_ratio=(1, 1),
                    flip=False, mean=(0, 0, 0), std=(1, 1, 1))
    xt, yt = next(iter(whole))
    alone = torch.cat([resize_boxes(p.float(), torch.tensor([[0.0, 0, p.shape[-1], p.shape[-1]]] * len(p)), 24,
                                    method) for p in parts]) / 255
    assert (xt - alone[yt]).abs().max().item() < 1e-5


def test_training_crops_of_several_sizes_stay_inside_each_image():
    """A crop never reaches the padding: images flat in their own colour stay flat after cropping."""
    parts = [torch.full((4, 3, s, s), v, dtype=torch.uint8) for s, v in ((12, 40), (20, 120), (33, 250))]
    split = Split(parts, torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 0, 1, 0, 1]), ["a", "b"], "flat").at(16)
    b = Batches(split, 12, train=True, device="cpu", mean=(0, 0, 0), std=(1, 1, 1), seed=3)
    for _ in range(3):
        x = next(iter(b))[0] * 255
        per = x.flatten(1)
        assert (per.amax(1) - per.amin(1)).max().item() < 1e-3
        assert sorted(per[:, 0].round().tolist()) == [40.0] * 4 + [120.0] * 4 + [250.0] * 4


def test_streamed_batches_equal_resident_ones_on_a_cpu_gather(monkeypatch):
    """The streaming path's gather (the pinned-buffer thread's work) makes the same canvases."""
    parts = [_smooth(5, 20, 1), _smooth(5, 28, 2)]
    split = Split(parts, torch.arange(10) % 2, ["a", "b"], "mixed").at(16)
    b = Batches(split, 4, train=False, device="cpu")
    idx = torch.tensor([1, 6, 3, 9])
    canvas, sides, _ = b._resident(idx)
    other = b._canvas(4, 28, "cpu")
    sides2 = torch.empty(4)
    b._fill(other, b._locate(idx), sides2, b.parts)
    assert torch.equal(canvas[:, :, :21, :21][sides.long() == 20], other[:, :, :21, :21][sides2.long() == 20])
    assert torch.equal(sides, sides2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("method", ["roi", "grid"])
def test_streamed_and_resident_batches_of_several_sizes_agree_on_a_gpu(method):
    """The pinned-buffer path (a split too large for the GPU) gives the resident path's batches."""
    parts = [_smooth(40, 20, 1), _smooth(30, 28, 2), _smooth(30, 64, 3)]
    split = Split(parts, torch.arange(100) % 10, [str(i) for i in range(10)], "mixed").at(48)
    for train in (False, True):
        res = Batches(split, 16, train=train, device="cuda", stream=False, seed=2, resize=method)
        st = Batches(split, 16, train=train, device="cuda", stream=True, seed=2, resize=method)
        assert st.stream and not res.stream and st.parts[0].device.type == "cpu"
        a, b = list(res), list(st)
        assert len(a) == len(b) == (6 if train else 7)
        ya, yb = torch.cat([y for _, y in a]), torch.cat([y for _, y in b])
        if not train:
            assert torch.equal(ya, yb)
            assert all(torch.allclose(x1, x2, atol=1e-5) for (x1, _), (x2, _) in zip(a, b))
        else:  # the same images each epoch; streamed batches come sorted within each batch
            assert torch.equal(ya.sort().values, yb.sort().values)
        cpu = Batches(split, 16, train=False, device="cpu")
        if not train:
            assert all(torch.allclose(x1.cpu(), x2, atol=1e-4) for (x1, _), (x2, _) in zip(a, cpu))


# ---------------------------------------------------------------------------- memory


def test_memory_refusal_names_the_size_and_what_fits(monkeypatch, tiny):
    monkeypatch.setenv(load_module.MEMORY_ENV, "100M")
    with pytest.raises(DataError) as e:  # 5,000 + 1,000 at 128 px: 295 MB
        load_data(None, 100, quiet=True)
    text = str(e.value)
    assert "\n" not in text and "needs 0.29 GB" in text and "0.10 GB of SCALING_MEMORY_LIMIT=100M" in text
    assert ", or a resolution of at most 64 px would fit" in text
    n = int(text.split("--train-size ")[1].split(" ")[0].replace(",", ""))
    assert n == (100 * 2**20 - 1000 * 3 * 128 * 128) // (3 * 128 * 128) == 1133
    assert load_data(None, 100, train_size=n, quiet=True).train.nbytes == n * 3 * 128 * 128  # which fits
    monkeypatch.setenv(load_module.MEMORY_ENV, "1K")
    with pytest.raises(DataError, match=r"the data needs 0.00 GB of memory \(12 training and 6 held-out images"):
        load_data(tiny, 16, quiet=True)


def test_memory_refusal_is_one_line_on_the_command_line(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(load_module.MEMORY_ENV, "30M")
    r = CliRunner().invoke(app, ["train", "--width", "0.25", "--depth", "0.25", "--resolution", "64", "--epochs", "1"])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
    assert "the data needs 0.07 GB" in r.output and "--train-size 1,560 or fewer, or a resolution of at most 32 px would fit" in r.output


# ---------------------------------------------------------------------------- disk


def test_a_full_disk_is_one_error_naming_the_folder_and_space(tiny, monkeypatch, data_cache):
    stale = data_cache / "data" / "x.12.bin.tmp-999999999-abcdef12"  # a crashed build's leftover
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"\0" * 10)
    real_add = cache.Writer.add

    def full(self, images, labels):
        if self.images >= 2:  # the third image finds the disk full
            self._fail(OSError(errno.ENOSPC, "No space left on device"))
        return real_add(self, images, labels)

    monkeypatch.setattr(cache.Writer, "add", full)
    with pytest.raises(NoSpace) as e:
        load_data(tiny, 16, quiet=True, workers=0)
    assert isinstance(e.value, OSError) and e.value.errno == errno.ENOSPC
    assert str(e.value).startswith(f"no space left on {data_cache / 'data'}: ") and str(e.value).endswith(" MB needed")
    assert not [p for p in (data_cache / "data").iterdir() if ".tmp-" in p.name]  # its own and the stale one
    monkeypatch.chdir(tiny.parent)
    r = CliRunner().invoke(app, ["train", "--width", "0.25", "--depth", "0.25", "--resolution", "32",
                                 "--data", str(tiny)])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1 and "no space left on" in r.output


def test_the_cache_files_are_written_with_plain_writes(tiny, monkeypatch):
    """No memory mapping while writing (a mapped page of a full disk is a SIGBUS)."""
    real = np.memmap

    def no_write_maps(*a, mode="r+", **k):
        assert mode in ("r", "c"), f"a cache file mapped for writing ({mode})"
        return real(*a, mode=mode, **k)

    monkeypatch.setattr(np, "memmap", no_write_maps)
    monkeypatch.setattr(np.lib.format, "open_memmap", lambda *a, **k: pytest.fail("open_memmap"))
    load_data(tiny, 16, quiet=True, workers=0)
    load_data(None, 16, train_size=20, val_size=10, quiet=True)


# ---------------------------------------------------------------------------- bad caches and changed sources


def _one_part_file(folder: Path, split: str = "train") -> Path:
    head = json.loads(next(folder.glob(f"*-{split}-cap*.json")).read_text())
    return folder / head["parts"][-1]["file"]


@pytest.mark.parametrize("damage", ["truncate", "flip", "header", "no-header"])
def test_a_damaged_cache_is_rebuilt_never_read(tiny, monkeypatch, data_cache, damage, caplog):
    first = load_data(tiny, 16, quiet=True)
    first.train = Split([x.clone() for x in first.train.parts], first.train.labels, first.train.classes, "copy")
    folder = data_cache / "data"  # (damaging a file under a mapping in use would be a SIGBUS: copied)
    part = _one_part_file(folder)
    good = part.read_bytes()
    if damage == "truncate":  # a crashed build, or a full disk
        part.write_bytes(good[: len(good) // 2])
    elif damage == "flip":  # same size, one byte changed
        part.write_bytes(good[:100] + bytes([good[100] ^ 0xFF]) + good[101:])
    elif damage == "header":
        next(folder.glob("*-train-cap*.json")).write_text('{"format": 2, "parts": [')
    else:  # the header was never written: an incomplete entry
        next(folder.glob("*-train-cap*.json")).unlink()
    cache._verified.clear()  # as a new process would
    builds = _builds(monkeypatch)
    with caplog.at_level(logging.WARNING):
        again = load_data(tiny, 16, quiet=True)
    assert builds == [1] and _same(again.train, first.train)
    assert part.read_bytes() == good
    if damage != "no-header":
        assert "rebuilt" in caplog.text


def test_a_source_changed_in_place_is_read_again(tiny, monkeypatch, tmp_path):
    first = load_data(tiny, 16, quiet=True)
    target = tiny / "val" / "cat" / "000.png"
    st = target.stat()
    im = np.asarray(Image.open(target)).copy()
    im[...] = 255 - im  # new content
    buf = io.BytesIO()
    Image.fromarray(im).save(buf, "PNG")
    data = buf.getvalue()
    data = data + b"\0" * (st.st_size - len(data)) if len(data) < st.st_size else data
    target.write_bytes(data)
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # the modification time set back
    again = load_data(tiny, 16, quiet=True)
    assert again.val.fingerprint != first.val.fingerprint and not _same(again.val, first.val)
    # an archive rewritten with its time set back
    arc = make_tar(tiny, tmp_path / "t.tar", compress=False)
    a1 = load_data(arc, 16, quiet=True)
    st = arc.stat()
    raw = bytearray(arc.read_bytes())
    arc.write_bytes(bytes(raw))
    os.utime(arc, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert load_data(arc, 16, quiet=True).train.fingerprint != a1.train.fingerprint


def test_an_unwritable_cache_folder_falls_back_to_memory_with_one_warning(tiny, monkeypatch, caplog):
    def refused(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(root_module.tempfile, "TemporaryFile", refused)
    with caplog.at_level(logging.WARNING):
        one = load_data(tiny, 16, quiet=True)
        two = load_data(tiny, 16, quiet=True)
    warnings = [r for r in caplog.records if "no usable cache folder" in r.getMessage()]
    assert len(warnings) == 1 and "kept in memory" in warnings[0].getMessage()
    assert "cannot be written (Permission denied)" in warnings[0].getMessage()
    assert _same(one.train, two.train) and not list((Path(os.environ["SCALING_CACHE"]) / "data").glob("*.json"))


@pytest.mark.parametrize("case", ["file", "home-empty", "home-nowhere"])
def test_a_bad_cache_root_is_said_and_the_caches_stay_in_memory(case, tmp_path, monkeypatch, caplog):
    if case == "file":
        f = tmp_path / "a-file"
        f.write_text("x")
        monkeypatch.setenv("SCALING_CACHE", str(f))
        why = f"SCALING_CACHE={f}: {f} is a file, not a folder"
    else:
        monkeypatch.delenv("SCALING_CACHE")
        monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
        monkeypatch.setenv("HOME", "" if case == "home-empty" else str(tmp_path / "nohome"))
        why = "HOME is empty" if case == "home-empty" else f"HOME={tmp_path / 'nohome'} is not a folder"
    with caplog.at_level(logging.WARNING):
        data = load_data(None, 16, train_size=20, val_size=10, quiet=True)
        counts = CountCache()
        counts.put(custom_spec(0.25, 0.25, 32), _fake_count())
        counts.save()
    messages = [r.getMessage() for r in caplog.records if "no usable cache folder" in r.getMessage()]
    assert len(messages) == 2 and all(why in m and "kept in memory" in m for m in messages), messages
    assert len(data.train) == 20 and counts.path is None
    assert not (tmp_path / "nohome").exists() and not Path("/.cache/scaling").exists()


def _fake_count():
    from scaling.complexity import Complexity

    return Complexity(flops=1, params=2, activations=3)


def test_data_and_counts_share_the_one_root(monkeypatch, tmp_path):
    monkeypatch.setenv("SCALING_CACHE", str(tmp_path / "root"))
    load_data(None, 16, train_size=20, val_size=10, quiet=True)
    counts = CountCache()
    counts.put(custom_spec(0.25, 0.25, 32), _fake_count())
    counts.save()
    assert counts.path.parent == tmp_path / "root" / "counts" and counts.path.exists()
    assert len(_headers(tmp_path / "root" / "data")) == 2
    # without SCALING_CACHE: the platform's user cache folder, which honours XDG_CACHE_HOME
    monkeypatch.delenv("SCALING_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_root("data") == tmp_path / "xdg" / "scaling" / "data"


def test_two_workers_needing_one_split_build_it_once(monkeypatch):
    drawn = []
    real = synthetic.render

    def slow(params, r):
        drawn.append(len(params["labels"]))
        time.sleep(0.05)
        return real(params, r)

    monkeypatch.setattr(synthetic, "render", slow)
    start = threading.Barrier(2)
    out, errors = [], []

    def work():
        try:
            start.wait()
            out.append(load_data(None, 16, train_size=300, val_size=50, quiet=True))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(out) == 2 and _same(out[0].train, out[1].train)
    assert sum(drawn) == 350  # each image drawn once


# ---------------------------------------------------------------------------- folders: links, names, classes


def test_symlink_loops_are_followed_once_and_never_back_into_the_split(tiny, monkeypatch):
    (tiny / "train" / "cat" / "up").symlink_to("..")  # back into the split
    (tiny / "train" / "dog" / "loop").symlink_to(".")  # around a loop
    (tiny / "train" / "dog" / "again").symlink_to("000.png")  # a file twice: once
    data = load_data(tiny, 16, quiet=True)
    assert data.train.counts() == [4, 4, 4]
    assert "train/cat/up" in data.train.skipped and "train/dog/loop" in data.train.skipped
    (tiny / "train" / "all").symlink_to(".")  # a class folder that is the split itself
    with pytest.raises(DataError, match=r"class folder train/all/ in .* is the split folder itself"):
        load_data(tiny, 16, quiet=True)


def test_a_class_folder_holding_other_classes_is_an_error(tiny):
    (tiny / "train" / "pets").mkdir()
    (tiny / "train" / "pets" / "cat").symlink_to(tiny / "train" / "cat")
    os.rename(tiny / "train" / "eel", tiny / "train" / "pets" / "eel")
    (tiny / "train" / "eel").symlink_to(tiny / "train" / "pets" / "eel")
    with pytest.raises(DataError, match=r"class folder train/pets/ .* holding the class folders eel"):
        load_data(tiny, 16, quiet=True)


def test_class_names_compare_after_unicode_normalisation(tmp_path):
    root = make_folder(tmp_path / "u", bad=False)
    nfc, nfd = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    assert nfc != nfd
    os.rename(root / "train" / "cat", root / "train" / nfc)
    os.rename(root / "val" / "cat", root / "val" / nfd)
    data = load_data(root, 16, quiet=True)
    assert data.train.classes == data.val.classes == [nfc, "dog", "eel"]


def test_one_class_is_refused(tmp_path):
    root = tmp_path / "one"
    for split in ("train", "val"):
        (root / split / "cat").mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(root / split / "cat" / "a.png")
    with pytest.raises(DataError, match=r"train/ has one class folder only \(cat/\): a classifier needs at least two"):
        load_data(root, 16, quiet=True)


# ---------------------------------------------------------------------------- scaling cache


def test_cache_command_lists_and_clears(monkeypatch, tiny, data_cache):
    load_data(tiny, 16, quiet=True)
    load_data(None, 16, train_size=20, val_size=10, quiet=True)
    counts = CountCache()
    counts.put(custom_spec(0.25, 0.25, 32), _fake_count())
    counts.save()
    r = CliRunner().invoke(app, ["cache"])
    assert r.exit_code == 0, r.output
    assert r.output.count("default-") == 2 and r.output.count("tiny-") == 2 and "complexity-v" in r.output
    assert "5 entries" in r.output
    old = next((data_cache / "data").glob("default-train-*.json"))
    past = time.time() - 10 * 86400
    os.utime(old, (past, past))
    r = CliRunner().invoke(app, ["cache", "--clear", "--older-than", "5"])
    assert r.exit_code == 0 and "removed 1 cache entry" in r.output, r.output
    assert len(_headers(data_cache / "data")) == 3
    assert not list((data_cache / "data").glob(old.name.split(".")[0] + ".*px.bin"))
    r = CliRunner().invoke(app, ["cache", "--clear"])
    assert r.exit_code == 0 and "removed 4 cache entries" in r.output
    assert not [p for p in (data_cache / "data").iterdir()] and not counts.path.exists()
    monkeypatch.setenv("SCALING_CACHE", str(tiny / "train" / "cat" / "000.png"))
    r = CliRunner().invoke(app, ["cache"])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1 and "is a file" in r.output


def test_decoding_into_memory_stops_at_the_memory_there_is(tiny, monkeypatch):
    """Without a cache folder a folder is decoded into memory: refused as it outgrows the limit, not killed."""
    monkeypatch.setenv(load_module.MEMORY_ENV, "4K")  # half of it: 2 KB, less than the 18 images' 7.3 KB
    with pytest.raises(DataError, match=r"no cache folder, so it is decoded into memory.*SCALING_MEMORY_LIMIT=4K"):
        load_data(tiny, 16, cache_dir=False, quiet=True, workers=0)
    monkeypatch.setenv(load_module.MEMORY_ENV, "1M")
    assert len(load_data(tiny, 16, cache_dir=False, quiet=True, workers=0).train) == 12
