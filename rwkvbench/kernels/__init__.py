"""Kernels (WKV scan; layer norm + token shift): plain references and the dispatch that picks a fast
path when one applies."""

from rwkvbench.kernels.wkv_reference import NEG_INF_STATE, initial_wkv_state, wkv4_reference
from rwkvbench.kernels.dispatch import norm_shift, wkv4

__all__ = ["wkv4", "norm_shift", "wkv4_reference", "initial_wkv_state", "NEG_INF_STATE"]
