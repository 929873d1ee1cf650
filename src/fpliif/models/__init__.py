"""Models: every architecture registers itself in :mod:`fpliif.registry` on import."""

from .base import SegmentationModel, pixel_centers
from .fpliif import FPLIIF

__all__ = ["FPLIIF", "SegmentationModel", "pixel_centers"]
