"""Where the face sits in a CelebAMask-HQ crop, measured: turns a detector's face box into the crop the
model was trained on.

CelebAMask-HQ images are square crops showing the whole head with hair, some neck and shoulders. The
model only sees that framing during training, so in-the-wild photos are cut the same way around each
detected face. With ``w`` the face box size (mean of its width and height) and ``(cx, cy)`` its centre:

    crop side   = SCALE * w
    crop centre = (cx - DX * w, cy - DY * w)      DX = dx + dx_nose * (nose landmark x - cx) / w

i.e. DX, DY are the face box centre's offset from the crop centre in face-box units. With landmarks the
window is also rolled by the face's roll ``a`` (eyes level in the crop, as in CelebAMask-HQ, whose faces
were aligned on the eyes): the offset is then taken along the rolled axes, crop centre =
``(cx, cy) - R(a) (DX, DY) w``. Each detector frames faces differently, so each has its constants.

Measured with the default :class:`~fpliif.infer.detect.MTCNNDetector` on all 850 images of celebamask-mini
(real CelebAMask-HQ training crops, 512 x 512)::

    python scripts/measure_framing.py --measure ../shared/data/celebamask-mini   # --detector mtcnn

    detected 849 / 850 (99.9 %); best-scoring box per image; medians (interquartile range):
    mtcnn box: SCALE = 1.5821 (1.5276-1.6382)   DX = -0.0018 (-0.0333-0.0316)   DY = 0.0766 (0.0624-0.0915)
               DX_NOSE = -0.5519 (DX = -0.0018 + DX_NOSE * nose offset: IQR -0.0082-0.0040)
               i.e. the box is 0.632 of the crop side; |roll| from the eye landmarks: median 0.86 deg,
               95th percentile 3.86 deg (the crops are eye-aligned)
    cross-check with the masks: mtcnn box / core width 1.171 (0.541 * 1.171 = 0.634: matches SCALE),
               mtcnn centre - core centre (-0.007, -0.012) box sides

and with the fallback :class:`~fpliif.infer.detect.HaarDetector` (``--detector haar``)::

    detected 828 / 850 (97.4 %); best-scoring box per image; medians (interquartile range):
    haar box:  SCALE = 1.5468 (1.4798-1.6254)   DX = 0.0015 (-0.0068-0.0107)   DY = 0.0802 (0.0695-0.0918)
               i.e. the box is 0.646 of the crop side
    cross-check with the 850 masks (face core = skin, nose, eyes, brows, mouth, lips bounding box):
               core width / crop side 0.541, core centre offset (+0.003, +0.054) crop sides
               (= +0.083 box sides below the crop centre: matches DY);
               haar box / core width 1.195 (0.541 * 1.195 = 0.646: matches SCALE),
               haar centre - core centre (-0.003, -0.004) box sides

Turned heads: MTCNN's box leans towards the visible cheek, so DX depends on how turned the face is. Against the
nose landmark's offset from the box centre along the rolled x axis (:func:`nose_offset`, box widths; 1st-99th
percentile -0.29 to 0.28) the MTCNN DX of the same 847 faces with landmarks has correlation -0.986; the
least-squares slope is ``DX_NOSE = -0.5519`` (the crop centre sits about halfway from the box centre towards the
nose), and DX's interquartile range shrinks from 0.065 to 0.012 box widths (the median of what is left, -0.0018,
is DX). A window scale term (the box is about 2 % smaller against the crop on the most turned faces) did not
help the parse and is left out (docs/detection.md, turned faces). Haar has no landmarks: no nose term.

So both boxes cover the face from brows to chin, about two thirds of the crop side, 8 % of its size below
the crop centre; the crop adds about a quarter box width on each side (ears, hair), more above (hair)
and the neck below. MTCNN's box is 2 % larger relative to the crop (SCALE 1.582 vs 1.547) and a little
less centred left-right (wider DX spread), and its size holds within 2 % when the face is rolled by 30 deg.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .geometry import Window


@dataclass(frozen=True)
class Framing:
    """Face box -> square crop window: side ``scale * w``, centre shifted by ``(-dx * w, -dy * w)``; with a nose
    landmark ``dx`` grows by ``dx_nose`` times the nose's offset from the box centre (turned heads)."""

    scale: float
    dx: float
    dy: float
    dx_nose: float = 0.0

    def window(
        self, box: tuple[float, float, float, float], angle: float = 0.0, nose: tuple[float, float] | None = None
    ) -> Window:
        """Square crop window (iterates as ``(x0, y0, side)``, integers, may extend outside the image).

        ``angle``: the face's roll in degrees (:func:`~fpliif.infer.detect.roll_degrees`); the window is rotated
        by it about its centre, and the offset ``(dx, dy)`` is taken along the rolled face's axes. ``nose``: the
        nose landmark (x, y), or None; its offset from the box centre along the rolled x axis, in box widths,
        times ``dx_nose`` is added to ``dx``."""
        x1, y1, x2, y2 = (float(v) for v in box)
        w = box_size(box)
        side = max(8, int(round(self.scale * w)))
        a = math.radians(float(angle))
        c, s = (1.0, 0.0) if angle == 0 else (math.cos(a), math.sin(a))
        dx = self.dx + (self.dx_nose * nose_offset(box, nose, angle) if nose is not None and self.dx_nose else 0.0)
        cx = (x1 + x2) / 2 - (c * dx - s * self.dy) * w
        cy = (y1 + y2) / 2 - (s * dx + c * self.dy) * w
        return Window(int(round(cx - side / 2)), int(round(cy - side / 2)), side, float(angle))


def nose_offset(box: tuple[float, float, float, float], nose: tuple[float, float], angle: float = 0.0) -> float:
    """How turned a face is, from its detection: the nose landmark's offset from the box centre along the face's
    rolled x axis (``angle`` degrees), in box widths (mean of width and height); 0 frontal, positive: the nose
    towards the image right."""
    x1, y1, x2, y2 = (float(v) for v in box)
    a = math.radians(float(angle))
    shift = math.cos(a) * (float(nose[0]) - (x1 + x2) / 2) + math.sin(a) * (float(nose[1]) - (y1 + y2) / 2)
    return shift / box_size(box)


def box_size(box: tuple[float, float, float, float]) -> float:
    """A face box's size ``w``: the mean of its width and height (at least 1 pixel)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return max(1.0, ((x2 - x1) + (y2 - y1)) / 2)


# Measured constants (see the module docstring for the command and the numbers).
HAAR_FRAMING = Framing(scale=1.5468, dx=0.0015, dy=0.0802)
MTCNN_FRAMING = Framing(scale=1.5821, dx=-0.0018, dy=0.0766, dx_nose=-0.5519)
DEFAULT_FRAMING = MTCNN_FRAMING

# The context window (FaceParser(context=True)): this many times the face window, same centre and roll; its labels
# are used outside the face window, for these classes only (docs/detection.md, "Context beyond the window").
CONTEXT_SCALE = 1.5
CONTEXT_CLASSES = ("background", "hair", "hat", "neck", "neck_l", "cloth", "ear_r", "l_ear", "r_ear")
# In the face window's outer band of this width (in half-sides), its probabilities are blended into the context
# window's (weight falling linearly to 0 at the edge: no seam); measured in docs/detection.md.
CONTEXT_FEATHER = 0.15
# Below the context window the body goes on: a lower context window, the context window moved down by this share
# of its side (the face's centre still inside it: eyes to chin in its upper part, so the model still sees a face
# crop), labels the pixels below the context window with BELOW_CLASSES, and with BELOW_CONTINUED only in the
# columns where the context window's own label at its bottom edge is that class (long hair goes on under hair;
# elsewhere the model takes dark clothes and backdrops below a face for hair); docs/detection.md, "Below the
# context window".
CONTEXT_DROP = 1 / 3
BELOW_CLASSES = ("background", "neck", "cloth")
BELOW_CONTINUED = ("hair",)
# Classes continued past the context windows' outer edge, guided by the photo (fpliif.infer.extend), in this order
# (an earlier class's new pixels are background to the later ones); measured in docs/detection.md.
EXTEND_CLASSES = ("cloth", "hair", "neck")


def lower_window(context: Window) -> Window:
    """The lower context window of a context window (:data:`CONTEXT_DROP` of its side further down)."""
    return context.lowered(CONTEXT_DROP)


# Face-core classes for the mask cross-check (CelebAMask-HQ names).
CORE_CLASSES = ("skin", "nose", "l_eye", "r_eye", "l_brow", "r_brow", "mouth", "u_lip", "l_lip")
