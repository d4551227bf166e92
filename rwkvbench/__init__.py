"""rwkvbench: compare RWKV with Transformers of the same size on quality, recall, prompt robustness and
efficiency, through one interface (`SequenceModel`) and tidy results."""

from rwkvbench.models import SequenceModel, load_model

__all__ = ["SequenceModel", "load_model"]
__version__ = "0.1.0"
