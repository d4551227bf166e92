"""Models: the SequenceModel interface, our RWKV-4, Transformer baselines, checkpoints and the registry."""

from rwkvbench.models.base import SequenceModel
from rwkvbench.models.registry import load_model

__all__ = ["SequenceModel", "load_model"]
