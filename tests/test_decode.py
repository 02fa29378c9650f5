"""Both loader backends decode a file to the same pixels: the PIL backend (fastres.data.pil.load_rgb, also
what eval and predict read images with) against DALI's decoder as the DALI pipelines run it.

16-bit PNGs (written byte by byte here, since Pillow writes no 16-bit RGB): DALI rounds a 16-bit sample x to
x / 257; Pillow's convert("RGB") clipped a 16-bit grayscale image at 255 (all white). EXIF orientations 1-8:
DALI turns an image upright by its tag, and so does the PIL backend now (it ignored the tag).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fastres.data.pil import load_rgb

dali = pytest.importorskip("nvidia.dali", reason="DALI is not installed")


def write_png16(path: Path, pixels: np.ndarray) -> Path:
    """A 16-bit PNG of `pixels` (H x W uint16: grayscale, colour type 0; H x W x 3: RGB, colour type 2)."""
    h, w = pixels.shape[:2]
    kind = 0 if pixels.ndim == 2 else 2
    rows = pixels.astype(">u2").reshape(h, -1).tobytes()
    raw = b"".join(b"\0" + rows[i * len(rows) // h : (i + 1) * len(rows) // h] for i in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", w, h, 16, kind, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    )
    return path


def dali_decode(paths: list[Path]) -> list[np.ndarray]:
    """Each file as the DALI backend's validation pipeline decodes it (fastres.data.dali's decoder arguments)."""
    from nvidia.dali import fn, pipeline_def, types

    from fastres.data.dali import _decoder_kwargs

    @pipeline_def(batch_size=len(paths), num_threads=1, device_id=None)
    def pipe():
        encoded, _ = fn.readers.file(files=[str(p) for p in paths], labels=[0] * len(paths))
        return fn.decoders.image(encoded, output_type=types.RGB, **_decoder_kwargs(False, 0.0, (0, 0)))

    p = pipe()
    p.build()
    out = p.run()[0]
    return [np.array(out.at(i)) for i in range(len(paths))]


def test_16_bit_pngs_decode_to_the_same_8_bit_pixels_in_both_backends(tmp_path):
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 65536, (24, 40)).astype(np.uint16)
    gray[0, :6] = [0, 128, 129, 32767, 65407, 65535]
    rgb = rng.integers(0, 65536, (24, 40, 3)).astype(np.uint16)
    files = [write_png16(tmp_path / "gray16.png", gray), write_png16(tmp_path / "rgb16.png", rgb)]
    with Image.open(files[0]) as img:
        assert img.mode == "I;16"  # the mode convert("RGB") saturated
    by_dali = dali_decode(files)
    expected = np.rint(gray / 257).astype(np.uint8)  # DALI's rule, checked on both first
    assert np.array_equal(by_dali[0], np.repeat(expected[..., None], 3, axis=2))
    pil_gray = np.asarray(load_rgb(str(files[0])))
    assert np.array_equal(pil_gray, by_dali[0]), "16-bit grayscale: PIL and DALI differ"
    assert pil_gray.mean() == pytest.approx(gray.mean() / 257, abs=0.5) and pil_gray.mean() < 200  # not white
    # 16-bit RGB: Pillow keeps each sample's high byte, DALI rounds: at most one level apart
    pil_rgb = np.asarray(load_rgb(str(files[1]))).astype(int)
    assert np.abs(pil_rgb - by_dali[1].astype(int)).max() <= 1
    assert np.abs(pil_rgb - rgb / 257).max() <= 1


def test_every_exif_orientation_is_turned_upright_the_same_way_by_both_backends(tmp_path):
    """An upright picture of four coloured quadrants, stored as each orientation would store it with its tag: both
    backends must give the upright picture back."""
    upright = np.zeros((32, 48, 3), np.uint8)
    upright[:16, :24] = (255, 0, 0)
    upright[:16, 24:] = (0, 255, 0)
    upright[16:, :24] = (0, 0, 255)
    upright[16:, 24:] = (255, 255, 0)
    # the stored image of each tag: the inverse of the transform the tag asks a viewer to apply
    stored = {1: upright, 2: upright[:, ::-1], 3: upright[::-1, ::-1], 4: upright[::-1],
              5: upright.transpose(1, 0, 2), 6: np.rot90(upright, 1), 7: upright[::-1, ::-1].transpose(1, 0, 2),
              8: np.rot90(upright, -1)}  # fmt: skip
    files = []
    for tag, pixels in stored.items():
        exif = Image.Exif()
        exif[0x0112] = tag
        path = tmp_path / f"orientation-{tag}.jpg"
        Image.fromarray(np.ascontiguousarray(pixels)).save(path, quality=95, subsampling=0, exif=exif.tobytes())
        files.append(path)
    by_dali = dali_decode(files)
    for tag, path, decoded in zip(stored, files, by_dali):
        pil = np.asarray(load_rgb(str(path))).astype(int)
        assert pil.shape == decoded.shape == upright.shape, (tag, pil.shape, decoded.shape)
        # JPEG's error at the quadrants' edges is a few levels; a picture turned or mirrored wrong is 100s off
        assert np.abs(pil - upright).mean() < 4, f"orientation {tag}: PIL's pixels are not the upright picture"
        assert np.abs(decoded.astype(int) - upright).mean() < 4, f"orientation {tag}: DALI's are not upright"
        assert np.abs(pil - decoded).max() <= 2, f"orientation {tag}: PIL and DALI decode different pixels"
