"""Training: configs, the FP-LIIF loss and the (distributed, resumable) training loop."""

from .config import load_config
from .loss import fpliif_loss, label_edges

__all__ = ["fpliif_loss", "label_edges", "load_config"]
