"""Models: every architecture registers itself in :mod:`fpliif.registry` on import."""

from .base import SegmentationModel, pixel_centers
from .fpliif import FPLIIF
from .segface import SegFaceMNV3
from .stn_icnn import STNiCNN

__all__ = ["FPLIIF", "STNiCNN", "SegFaceMNV3", "SegmentationModel", "pixel_centers"]
