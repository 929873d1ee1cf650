"""Parsing real photos: Python API, CLI (``fpliif parse`` / ``fpliif export onnx``), detection, ONNX.

Modules (torch is imported only by ``torch_backend`` and ``onnx_export``):

* :mod:`~fpliif.infer.parser`: :class:`FaceParser` (photos with detection, aligned crops);
* :mod:`~fpliif.infer.result`: :class:`ParseResult`, :class:`Face` (labels, class shares, overlays, PNGs,
  masks by name, label-set remaps);
* :mod:`~fpliif.infer.detect`: :class:`MTCNNDetector` (default: boxes + 5 landmarks, on OpenCV DNN),
  :class:`HaarDetector` (OpenCV Haar cascades, fallback; any callable works); docs/detection.md;
* :mod:`~fpliif.infer.framing`: the measured CelebAMask-HQ crop framing (``scripts/measure_framing.py``);
* :mod:`~fpliif.infer.geometry`: crop windows (rolled to level the eyes), query coordinates, paste-back (numpy);
* :mod:`~fpliif.infer.tta`: flip test-time augmentation (``FaceParser(tta=True)``, ``fpliif eval --tta``);
* :mod:`~fpliif.infer.images`, :mod:`~fpliif.infer.video`: file input/output;
* :mod:`~fpliif.infer.onnx_export` / :mod:`~fpliif.infer.onnx_backend`: ONNX export and :class:`OnnxModel`.
* :mod:`~fpliif.infer.cli`: the ``parse`` and ``export`` commands (``cli_parse``, ``cli_video``, ``cli_files``,
  ``cli_export``).
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "FaceParser": "parser",
    "ParseResult": "result",
    "Face": "result",
    "HaarDetector": "detect",
    "MTCNNDetector": "detect",
    "Framing": "framing",
    "OnnxModel": "onnx_backend",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
