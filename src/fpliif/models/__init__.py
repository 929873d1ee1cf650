"""Models: importing this package registers every built-in architecture in :mod:`fpliif.registry`.

The factory is here, not in the registry (which imports no model, as timm's): ``make``, ``available``,
``constructor``, ``check_args`` and ``check_name`` are the registry's functions, and importing them from this
package guarantees the built-ins are registered.
"""

from ..registry import available, check_args, check_name, constructor, make
from .base import SegmentationModel, pixel_centers
from .fpliif import FPLIIF
from .segface import SegFaceMNV3
from .stn_icnn import STNiCNN

__all__ = [
    "FPLIIF",
    "STNiCNN",
    "SegFaceMNV3",
    "SegmentationModel",
    "available",
    "check_args",
    "check_name",
    "constructor",
    "make",
    "pixel_centers",
]
