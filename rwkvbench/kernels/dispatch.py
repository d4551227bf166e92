"""Choose the WKV implementation for a call.

`wkv4` is the single entry point the model uses. Today it always takes the reference; the CUDA kernel
(csrc/) plugs in here behind the same signature.
"""

from __future__ import annotations

from rwkvbench.kernels.wkv_reference import wkv4_reference


def wkv4(w, u, k, v, state=None):
    """WKV-4 over (B, T, C) keys and values with state carry. See wkv_reference for the contract."""
    return wkv4_reference(w, u, k, v, state)
