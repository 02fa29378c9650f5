"""Tests of the build of fastres._C: what it holds, what it links, where it imports.

Run with plain `pytest` after `pip install .`. The first test fails, with the advice, when
the imported fastres has no _C: usually `python -m pytest` run from the repository root, where
the source tree's fastres/ shadows the installed package.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from fastres.kernels import ops

ROOT = Path(__file__).resolve().parents[1]


def native():
    if not ops.native_available():
        pytest.fail(ops._missing_native_message(), pytrace=False)
    return ops._C


def test_native_module_is_importable():
    C = native()
    assert Path(C.__file__).name.startswith("_C")


def test_build_info_keys_and_types():
    info = native().build_info()
    assert isinstance(info["cuda"], bool)
    assert isinstance(info["openmp"], bool)
    assert isinstance(info["compiler"], str) and info["compiler"]
    assert isinstance(info["cuda_archs"], list)
    assert all(isinstance(a, str) for a in info["cuda_archs"])
    assert info["segment_chunk"] == ops.SEGMENT_CHUNK
    if info["cuda"]:
        assert info["cuda_archs"], "a CUDA build names its architectures"
        assert isinstance(info["cuda_version"], int) and info["cuda_version"] >= 11000
        assert info["cuda_runtime"] == "static"
    else:
        assert info["cuda_version"] is None and info["cuda_archs"] == []
    assert ops.build_info()["native"] is True


def _cuda_opted_out() -> bool:
    return os.environ.get("FASTRES_CUDA", "").strip().upper() in {"OFF", "0", "FALSE", "NO"}


def test_cuda_kernels_built_when_nvcc_is_there():
    # A build that silently skipped CUDA must not pass where nvcc exists. To test a
    # deliberately CPU-only build, build and test with FASTRES_CUDA=OFF in the environment.
    nvcc = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if os.path.exists("/usr/local/cuda/bin/nvcc") else None)
    if nvcc is None or _cuda_opted_out():
        pytest.skip("no nvcc here, or FASTRES_CUDA=OFF")
    assert native().build_info()["cuda"], (
        f"nvcc is at {nvcc} but fastres._C was built without CUDA kernels: reinstall with "
        "`pip install . -v` and look for 'fastres: CUDA' in the CMake output"
    )


def _libcuda_loadable() -> bool:
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def test_cuda_device_count_is_zero_without_a_driver():
    n = native().cuda_device_count()
    assert isinstance(n, int) and n >= 0
    v = native().cuda_driver_version()
    assert isinstance(v, int) and v >= 0
    if not _libcuda_loadable():
        assert n == 0 and v == 0
    elif native().build_info()["cuda"]:
        from fastres.kernels import paths

        assert v == paths.driver_version()  # the runtime's answer and libcuda's agree


def test_kernel_sources_are_installed_next_to_the_module():
    # fastres.kernels.rtc compiles them at run time where the build has no CUDA kernels: a wheel must
    # carry them (CMakeLists.txt installs them into fastres/csrc)
    from fastres.kernels import rtc

    installed = Path(native().__file__).parent / "csrc"
    for file in rtc.KERNELS:
        src = (ROOT / "csrc" / file).read_text()
        assert (installed / file).read_text() == src, f"{installed / file} differs from csrc/{file}: reinstall"


def test_imports_and_runs_on_cpu_without_a_visible_gpu(tmp_path):
    # Even a CUDA build imports, reports no device and runs its CPU kernels when no GPU is
    # visible (and here, in CI, with no driver at all): cudart is static and loads libcuda
    # only when first asked.
    code = (
        "import fastres._C as C, torch, fastres.kernels.ops as ops\n"
        "assert C.cuda_device_count() == 0\n"
        "out = ops.segment_sq_norms(torch.ones(5), torch.tensor([0, 2, 5]))\n"
        "assert out.tolist() == [2.0, 3.0], out\n"
        "print(C.build_info()['cuda'])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["CUDA_VISIBLE_DEVICES"] = ""
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == str(native().build_info()["cuda"])


def elf_needed(path: str) -> list[str]:
    """DT_NEEDED entries of a 64-bit little-endian ELF shared object."""
    data = Path(path).read_bytes()
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1, "not a 64-bit LE ELF"
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    needed = []
    for _name, sh_type, _flags, _addr, offset, size, link, *_ in sections:
        if sh_type != 6:  # SHT_DYNAMIC
            continue
        strtab_offset = sections[link][4]
        for pos in range(offset, offset + size, 16):
            tag, val = struct.unpack_from("<qQ", data, pos)
            if tag == 0:  # DT_NULL
                break
            if tag == 1:  # DT_NEEDED
                end = data.index(b"\0", strtab_offset + val)
                needed.append(data[strtab_offset + val : end].decode())
    return needed


def test_extension_links_neither_libtorch_nor_dynamic_cudart():
    needed = elf_needed(native().__file__)
    assert any(n.startswith("libc.so") for n in needed), needed  # the parser sees entries
    bad = [n for n in needed if n.startswith(("libtorch", "libc10", "libcudart", "libcuda.", "libpython"))]
    assert not bad, f"fastres._C must not depend on {bad} (docs/design.md, decision 1); it needs {needed}"


def test_build_needs_no_torch():
    tomllib = pytest.importorskip("tomllib")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    requires = pyproject["build-system"]["requires"]
    assert not [r for r in requires if r.lower().startswith("torch")], requires
    assert pyproject["build-system"]["build-backend"] == "scikit_build_core.build"
