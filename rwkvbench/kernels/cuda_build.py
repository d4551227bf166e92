"""Build the CUDA extension (csrc/: the WKV scan, the prefill's fused layer norm + token shift, the fused
decode stages) on first use with torch's cpp_extension + ninja, into a cache folder keyed by the
sources, so later imports load it in a second."""

from __future__ import annotations

import functools
import hashlib
import os
import warnings
from pathlib import Path

from rwkvbench.config import cache_root

SOURCES = ("extension.cpp", "wkv4_binding.cpp", "wkv4_kernels.cu", "norm_shift_binding.cpp", "norm_shift.cu",
           "rwkv4_decode_binding.cpp", "rwkv4_decode.cu")


def csrc_dir() -> Path:
    """The checkout's csrc/ when running from source (see config.conf_dir), else the installed package's."""
    checkout = Path(__file__).resolve().parents[2] / "csrc"
    if (checkout / "extension.cpp").is_file():
        return checkout
    import rwkvbench.csrc as pkg

    return Path(pkg.__file__).parent


def _cache_dir(sources: list[Path], defines: tuple) -> Path:
    digest = hashlib.sha256(repr(defines).encode())
    for src in sources + sorted(csrc_dir().glob("*.h")):
        digest.update(src.read_bytes())
    path = cache_root() / "wkv4" / digest.hexdigest()[:16]
    path.mkdir(parents=True, exist_ok=True)
    return path


def _reason(message: str) -> str:
    """The compiler's error lines if there are any (ninja's command lines are long and say little)."""
    errors = [line.strip() for line in message.splitlines() if "error" in line.lower() and len(line) < 400]
    return " | ".join(errors[:3]) if errors else " ".join(message.split())[:400]


_FAILED: dict[tuple[str, ...], str] = {}  # defines -> why the build could not run


def build_error(defines: tuple[str, ...] = ()) -> str | None:
    """Why load_extension(defines) returned None (its warning is given once per process), or None."""
    return _FAILED.get(defines)


@functools.cache
def load_extension(defines: tuple[str, ...] = ()):
    """The compiled module, or None (with a one-line warning saying why) if it cannot be built.
    `defines` ("WKV4_TILE=256", ...) build a variant of the tuning knobs in csrc/ (benchmarks/tune_wkv.py)."""
    try:
        import torch
        from torch.utils.cpp_extension import load

        if not torch.cuda.is_available():
            _FAILED[defines] = "torch sees no CUDA device"
            return None
        sources = [csrc_dir() / s for s in SOURCES]
        major, minor = torch.cuda.get_device_capability()
        flags = [f"-D{d}" for d in defines]
        build_dir = _cache_dir(sources, defines)
        return load(
            name="rwkvbench_wkv4" + (f"_{build_dir.name}" if defines else ""),
            sources=[str(s) for s in sources],
            build_directory=str(build_dir),
            extra_cflags=["-O3", *flags],
            extra_cuda_cflags=["-O3", "-std=c++17", f"-gencode=arch=compute_{major}{minor},code=sm_{major}{minor}", *flags],
            verbose=os.environ.get("RWKVBENCH_VERBOSE_BUILD") == "1",
        )
    except Exception as e:  # a failed build falls back to the reference
        reason = _FAILED[defines] = _reason(str(e))
        warnings.warn(f"rwkvbench: CUDA WKV kernel unavailable, using the PyTorch reference: {reason}", stacklevel=2)
        return None
