"""fpliif: FP-LIIF face parsing (Sarkar et al., CVPR 2023) in PyTorch."""

from . import models  # noqa: F401  (registers the architectures)
from .checkpoint import load, read_metadata, save
from .infer.parser import FaceParser  # numpy-only import; torch is loaded by the model
from .registry import available, make

__version__ = "0.1.0"
__all__ = ["FaceParser", "__version__", "available", "load", "make", "read_metadata", "save"]
