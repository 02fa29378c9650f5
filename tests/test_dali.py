"""The DALI backend on CPU operators, on real JPEG files written here.

The mixed (GPU) decoder never runs in these tests: they build CPU-only pipelines
(device_id=None). Skipped where nvidia.dali cannot be imported.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("nvidia.dali")

from loader_cfg import loader_cfg

from fastres.data import scan_imagenet  # noqa: E402
from fastres.data.dali import DaliLoader, DaliOptions  # noqa: E402
from fastres.data.loader import make_loaders, resolve_backend  # noqa: E402
from fastres.data.transforms import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402

CPU = torch.device("cpu")


def write_image(path: Path, w: int, h: int, seed: int, fmt: str = "JPEG", mode: str = "RGB") -> None:
    """A smooth random image (JPEG keeps it close): low-frequency noise, upsampled."""
    path.parent.mkdir(parents=True, exist_ok=True)
    small = np.random.default_rng(seed).integers(0, 256, (max(2, h // 8), max(2, w // 8), 3), dtype=np.uint8)
    img = Image.fromarray(small).resize((w, h), Image.BILINEAR).convert(mode)
    img.save(path, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dali")
    for split, n in (("train", 8), ("val", 5)):
        for ci, name in enumerate(("b_dog", "a_cat", "c_eel")):
            for i in range(n):
                write_image(
                    root / split / name / f"{name}_{i}.JPEG", 48 + 9 * i, 40 + 6 * ci, 100 * ci + i + len(split)
                )
    return root


@pytest.fixture(scope="module")
def indexed(tree):
    """Train samples labelled by their index, so batches name the samples they hold."""
    train, _ = scan_imagenet(tree)
    return [(p, i) for i, (p, _) in enumerate(train.samples)]


def Cfg():  # noqa: N802 (the tests build it as they built the stand-in it replaces)
    return loader_cfg(backend="dali", batch_size=4, image_size=32, crop_scale_min=0.25, workers=2)


def cfg_for(tree, **kw):
    cfg = Cfg()
    cfg.data = str(tree)
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def epoch(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


# ----------------------------------------------------------------------------- contract


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_shapes_dtypes_layouts(tree, dtype, channels_last):
    loaders = make_loaders(cfg_for(tree), CPU, dtype, channels_last)
    assert len(loaders.train) == 24 // 4 and loaders.train.num_samples == 24
    batches = epoch(loaders.train)
    assert len(batches) == len(loaders.train)
    for x, y in batches:
        assert x.shape == (4, 3, 32, 32) and x.dtype == dtype and x.device == CPU
        assert y.shape == (4,) and y.dtype == torch.int64
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        assert x.is_contiguous(memory_format=fmt)
    vx, vy = next(iter(loaders.val))
    assert vx.shape == (4, 3, 32, 32) and vx.dtype == dtype


def test_labels_equal_the_pil_path(tree):
    dali = make_loaders(cfg_for(tree), CPU)
    pil = make_loaders(cfg_for(tree, backend="pytorch", workers=0), CPU)
    assert dali.classes == pil.classes == ("a_cat", "b_dog", "c_eel")
    assert torch.cat([y for _, y in dali.val]).tolist() == torch.cat([y for _, y in pil.val]).tolist()
    train_labels = sorted(torch.cat([y for _, y in dali.train]).tolist())
    assert train_labels == [0] * 8 + [1] * 8 + [2] * 8


def test_normalisation_with_imagenet_mean_and_std(tmp_path):
    colour = (200, 100, 50)
    path = tmp_path / "flat.JPEG"
    Image.new("RGB", (64, 48), colour).save(path, quality=95)
    want = torch.tensor([(c - m) / s for c, m, s in zip(colour, IMAGENET_MEAN, IMAGENET_STD)])
    for train in (False, True):
        x, _ = next(iter(DaliLoader([(str(path), 0)] * 2, DaliOptions(train=train, batch_size=2, size=16, device=CPU))))
        torch.testing.assert_close(x.mean((2, 3)), want.expand(2, 3), atol=0.03, rtol=0)
        assert x.std((2, 3)).max() < 0.03  # a flat image stays flat


def test_val_pixels_agree_with_the_pil_path(tree):
    # Same resize-shorter-side + center crop; resamplers differ slightly, statistics must not.
    dali = torch.cat([x for x, _ in make_loaders(cfg_for(tree), CPU).val])
    pil = torch.cat([x for x, _ in make_loaders(cfg_for(tree, backend="pytorch", workers=0), CPU).val])
    assert dali.shape == pil.shape == (15, 3, 32, 32)
    # per image: means within 0.05 (3 grey levels of 255), per channel within 0.1; spreads within 10%
    assert (dali.mean((1, 2, 3)) - pil.mean((1, 2, 3))).abs().max() < 0.05
    mean_gap = (dali.mean((2, 3)) - pil.mean((2, 3))).abs()
    assert mean_gap.max() < 0.1, mean_gap
    std_ratio = dali.std((2, 3)) / pil.std((2, 3))
    assert ((std_ratio - 1).abs() < 0.1).all(), std_ratio
    # Pixels agree up to the resamplers and the half-pixel rounding of the center crop
    # (PIL's path floors the offset, DALI rounds it): close, not equal.
    assert (dali - pil).abs().mean() < 0.3


def test_train_crops_and_flips_vary(tree, indexed):
    loader = DaliLoader(
        indexed[:1] * 8, DaliOptions(train=True, batch_size=8, size=24, device=CPU, crop_scale_min=0.25)
    )
    x, _ = next(iter(loader))
    assert len({tuple(v.flatten()[:64].tolist()) for v in x}) == 8  # eight different crops of one image


# ----------------------------------------------------------------------------- sharding and order


@pytest.mark.parametrize("world", [1, 2, 3])
def test_train_shards_hold_every_sample_once_per_epoch(indexed, world):
    loaders = [
        DaliLoader(indexed, DaliOptions(train=True, batch_size=4, size=16, device=CPU, rank=r, world=world, threads=1))
        for r in range(world)
    ]
    assert len({len(lo) for lo in loaders}) == 1
    for _ in range(2):  # shards rotate between epochs: check two
        seen = [i for lo in loaders for _, y in epoch(lo) for i in y.tolist()]
        steps = (len(indexed) // world) // 4
        assert len(seen) == steps * 4 * world
        assert len(set(seen)) == len(seen)  # nothing twice
        if steps * 4 * world == len(indexed):
            assert sorted(seen) == list(range(len(indexed)))


def test_train_order_is_shuffled(indexed):
    seen = [
        i
        for _, y in epoch(DaliLoader(indexed, DaliOptions(train=True, batch_size=4, size=16, device=CPU)))
        for i in y.tolist()
    ]
    assert sorted(seen) == list(range(24)) and seen != sorted(seen)


@pytest.mark.parametrize("world, batch", [(1, 4), (2, 4), (4, 3), (7, 2)])
def test_validation_counts_every_image_once_across_ranks(tree, world, batch):
    _, val = scan_imagenet(tree)
    samples = [(p, i) for i, (p, _) in enumerate(val.samples)]  # 15 images
    seen = []
    for rank in range(world):
        lo = DaliLoader(
            samples, DaliOptions(train=False, batch_size=batch, size=16, device=CPU, rank=rank, world=world)
        )
        got = [i for _, y in epoch(lo) for i in y.tolist()]
        assert len(got) == lo.num_samples and len(lo) == math.ceil(lo.num_samples / batch)
        seen += got
    assert sorted(seen) == list(range(15))


def test_same_seed_same_batches_other_seed_other_batches(indexed):
    a = epoch(DaliLoader(indexed, DaliOptions(train=True, batch_size=4, size=16, device=CPU, seed=5, threads=2)))
    b = epoch(DaliLoader(indexed, DaliOptions(train=True, batch_size=4, size=16, device=CPU, seed=5, threads=1)))
    c = epoch(DaliLoader(indexed, DaliOptions(train=True, batch_size=4, size=16, device=CPU, seed=6, threads=2)))
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))
    assert not all(torch.equal(ya, yc) for (_, ya), (_, yc) in zip(a, c))


def test_ranks_get_different_augmentation_seeds(indexed):
    a = DaliLoader(indexed, DaliOptions(train=True, batch_size=4, size=16, device=CPU, rank=0, world=2))
    b = DaliLoader(indexed, DaliOptions(train=True, batch_size=4, size=16, device=CPU, rank=1, world=2))
    assert set(torch.cat([y for _, y in a]).tolist()).isdisjoint(torch.cat([y for _, y in b]).tolist())


def test_checkpoint_resumes_the_same_sample_order(indexed):
    straight = DaliLoader(indexed, DaliOptions(train=True, batch_size=4, size=16, device=CPU, seed=1))
    epoch(straight)
    state = straight.state_dict()
    want = [epoch(straight) for _ in range(2)]
    resumed = DaliLoader(indexed, DaliOptions(train=True, batch_size=4, size=16, device=CPU, seed=1))
    resumed.load_state_dict(state)
    got = [epoch(resumed) for _ in range(2)]
    fresh = epoch(DaliLoader(indexed, DaliOptions(train=True, batch_size=4, size=16, device=CPU, seed=1)))
    for we, ge in zip(want, got):
        assert all(torch.equal(a[1], b[1]) and torch.equal(a[0], b[0]) for a, b in zip(we, ge))
    # and the resumed order is not just epoch 0 again
    assert [y.tolist() for _, y in got[0]] != [y.tolist() for _, y in fresh]


@pytest.mark.parametrize("rounding", ["floor", "ceil"])
@pytest.mark.parametrize("n, world", [(23, 2), (25, 2), (27, 2), (25, 3), (26, 3)])
def test_unequal_shards_every_rank_makes_its_steps_and_no_epoch_overlaps(indexed, n, world, rounding):
    # Shards of unequal size (n not a multiple of world): DALI's own count per shard can differ by
    # one, and its shards move on through the list each epoch, overlapping where they are unequal.
    samples = [(indexed[i % len(indexed)][0], i) for i in range(n)]  # labelled by position in the list
    loaders = [
        DaliLoader(
            samples,
            DaliOptions(
                train=True, batch_size=4, size=16, device=CPU, rank=r, world=world, threads=1, rounding=rounding
            ),
        )
        for r in range(world)
    ]
    steps = -(-(n // world) // 4) if rounding == "ceil" else (n // world) // 4
    padding = set(range((world - n % world) % world))  # the first samples, listed twice to equalise the shards
    for e in range(3):
        per_rank = [[y.tolist() for _, y in lo] for lo in loaders]
        assert [len(b) for b in per_rank] == [steps] * world == [len(lo) for lo in loaders], (e, per_rank)
        assert {len(y) for b in per_rank for y in b} == {4}  # whole batches, the last one too
        # no two ranks read the same sample in an epoch, the padding aside
        mine = [{i for y in b for i in y} for b in per_rank]
        for r in range(world):
            for q in range(r + 1, world):
                assert mine[r] & mine[q] <= padding, (e, r, q, sorted(mine[r] & mine[q]))
        if rounding == "floor":  # and no rank twice (ceil repeats its shard's last sample in its last batch)
            seen = [i for b in per_rank for y in b for i in y]
            assert {i for i in seen if seen.count(i) > 1} <= padding, e


def test_an_epoch_is_a_whole_number_of_accumulated_steps(indexed):
    # 24 images in batches of 4 are 6 batches; accumulating 4 a step, the epoch is 4 of them and
    # the next epoch still starts at the beginning of DALI's (no batch of the last one left over)
    lo = DaliLoader(indexed, DaliOptions(train=True, batch_size=4, size=16, device=CPU, threads=1, accumulate=4))
    assert len(lo) == 4
    for _ in range(3):
        ys = [i for _, y in lo for i in y.tolist()]
        assert len(ys) == 16 and len(set(ys)) == 16


def test_a_checkpoint_in_the_epochs_last_step_resumes_at_the_next_epoch(indexed):
    # The trainer checkpoints inside its loop, the last batch in hand and the step count at the
    # epoch boundary: the loader's state must then be the next epoch's start.
    straight = DaliLoader(indexed, DaliOptions(train=True, batch_size=4, size=16, device=CPU, seed=3, threads=1))
    state = None
    for k, _ in enumerate(straight):
        if k == len(straight) - 1:
            state = straight.state_dict()
    want = epoch(straight)
    resumed = DaliLoader(indexed, DaliOptions(train=True, batch_size=4, size=16, device=CPU, seed=3, threads=1))
    resumed.load_state_dict(state)
    got = epoch(resumed)
    assert [y.tolist() for _, y in got] == [y.tolist() for _, y in want]
    assert all(torch.equal(a[0], b[0]) for a, b in zip(got, want))


def test_steps_rounding_ceil_fills_the_last_batch_in_both_loaders(tree):
    # 24 training images in batches of 5: floor makes 4 steps, ceil (NVIDIA's get_epoch_size) 5
    for backend in ("dali", "pytorch"):
        for rounding, steps in (("floor", 4), ("ceil", 5)):
            cfg = cfg_for(tree, backend=backend, batch_size=5, steps_rounding=rounding, workers=1)
            train = make_loaders(cfg, CPU).train
            sizes = [len(y) for _, y in train]
            assert len(train) == steps and sizes == [5] * steps, (backend, rounding, sizes)


# ----------------------------------------------------------------------------- files and backends


def test_odd_but_valid_files_decode(tmp_path):
    paths = []
    for name, fmt, mode in (("cmyk", "JPEG", "CMYK"), ("gray", "JPEG", "L"), ("png", "PNG", "RGB")):
        write_image(tmp_path / f"{name}.JPEG", 50, 40, 3, fmt, mode)
        paths.append(str(tmp_path / f"{name}.JPEG"))
    x, y = next(
        iter(
            DaliLoader(
                [(p, i) for i, p in enumerate(paths)], DaliOptions(train=False, batch_size=3, size=16, device=CPU)
            )
        )
    )
    assert x.shape == (3, 3, 16, 16) and torch.isfinite(x).all() and y.tolist() == [0, 1, 2]
    assert (x[1, 0] - x[1, 1]).abs().max() > 0  # grayscale is decoded to RGB (then normalised per channel)


def test_excluded_files_are_left_out(tree):
    _, val = scan_imagenet(tree)
    drop = {val.samples[0][0], val.samples[7][0]}
    loaders = make_loaders(cfg_for(tree), CPU, exclude=drop)
    assert loaders.val_size == 13 and len(torch.cat([y for _, y in loaders.val])) == 13


def test_auto_and_synthetic_backends(tree):
    assert resolve_backend("auto") == "dali" and resolve_backend("pytorch") == "pytorch"
    assert isinstance(make_loaders(cfg_for(tree, backend="auto"), CPU).train, DaliLoader)
    syn = make_loaders(cfg_for(tree, backend="synthetic"), CPU, torch.bfloat16, True)
    batches = list(syn.train)
    assert len(batches) == len(syn.train) == 6
    x, y = batches[0]
    assert (
        x.shape == (4, 3, 32, 32) and x.dtype == torch.bfloat16 and x.is_contiguous(memory_format=torch.channels_last)
    )
    assert y.dtype == torch.int64 and 0 <= y.min() and y.max() < 3
    assert batches[1][0].data_ptr() == x.data_ptr()  # made once, never copied


# ----------------------------------------------------------------------------- webdataset shards


def test_webdataset_shards_yield_the_folder_samples(tree, tmp_path):
    from fastres.data.__main__ import main as data_main
    from fastres.data.shards import Shards

    assert data_main(["shard", str(tree), str(tmp_path / "wds"), "--shard-size", "7"]) == 0
    train_shards, val_shards = Shards(tmp_path / "wds" / "train"), Shards(tmp_path / "wds" / "val")
    assert len(train_shards.paths) == 4 and len(train_shards) == 24 and len(val_shards) == 15
    assert all(Path(p).exists() for p in train_shards.index_paths)
    assert train_shards.classes == ("a_cat", "b_dog", "c_eel")
    _, val = scan_imagenet(tree)
    # val shards keep the folder order: the same bytes decode to the same tensors, same labels
    for world in (1, 2):
        for rank in range(world):
            a = epoch(
                DaliLoader(
                    val_shards, DaliOptions(train=False, batch_size=4, size=16, device=CPU, rank=rank, world=world)
                )
            )
            b = epoch(
                DaliLoader(
                    val.samples, DaliOptions(train=False, batch_size=4, size=16, device=CPU, rank=rank, world=world)
                )
            )
            assert len(a) == len(b)
            for (xa, ya), (xb, yb) in zip(a, b):
                assert torch.equal(ya, yb) and torch.equal(xa, xb)
    # train shards: one epoch holds every image once, with its folder label
    labels = torch.cat(
        [y for _, y in epoch(DaliLoader(train_shards, DaliOptions(train=True, batch_size=4, size=16, device=CPU)))]
    )
    assert sorted(labels.tolist()) == [0] * 8 + [1] * 8 + [2] * 8


# ----------------------------------------------------------------------------- GPU (mixed decode)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (mixed decoder)")
def test_mixed_decoder_on_the_gpu_matches_the_cpu_pipeline(tree):
    cuda = torch.device("cuda")
    gpu = make_loaders(cfg_for(tree), cuda, torch.float16, True)
    cpu = make_loaders(cfg_for(tree), CPU, torch.float16, True)
    xg, yg = next(iter(gpu.train))
    assert xg.device.type == "cuda" and xg.dtype == torch.float16 and yg.device.type == "cuda"
    assert xg.is_contiguous(memory_format=torch.channels_last)
    vg = torch.cat([x.float().cpu() for x, _ in gpu.val])
    vc = torch.cat([x.float() for x, _ in cpu.val])
    assert torch.equal(torch.cat([y.cpu() for _, y in gpu.val]), torch.cat([y for _, y in cpu.val]))
    assert (vg - vc).abs().mean() < 0.05  # nvJPEG vs libjpeg-turbo: rounding-level differences
