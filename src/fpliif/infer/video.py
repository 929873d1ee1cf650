"""Video in/out for ``fpliif parse --video``. No torch here.

Reading uses OpenCV (``cv2.VideoCapture``, part of the required opencv-python-headless): video files, and live
sources where OpenCV can open them: a camera index (``0``) or a stream URL (``rtsp://``, ``http://``, ...;
through OpenCV's FFmpeg backend). A source OpenCV cannot open raises a ValueError that names it and why it may
fail (no such camera, a camera needs OpenCV's V4L2/libavdevice support, the stream is unreachable). Writing prefers
imageio + imageio-ffmpeg (H.264 / yuv420p MP4: plays in browsers and every player; ``pip install
'fpliif[video]'``) and falls back to OpenCV's ``VideoWriter`` with the MPEG-4 Part 2 codec (``mp4v``:
plays in VLC/ffplay/most desktop players, not in browsers). Both were verified here by reading the written
file back.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


def is_stream(source: str | Path) -> bool:
    """Whether ``source`` names a live source rather than a file: a camera index (digits) or a URL (``://``)."""
    text = str(source)
    return text.isdigit() or "://" in text


def _open(source: str | Path) -> tuple[Any, str]:
    """An opened ``cv2.VideoCapture`` of a file, camera index or stream URL, and how to name it in errors."""
    import cv2

    if is_stream(source):
        text = str(source)
        what = f"camera {int(text)}" if text.isdigit() else f"stream {text}"
        cap = cv2.VideoCapture(int(text) if text.isdigit() else text)
        if not cap.isOpened():
            raise ValueError(
                f"{what}: OpenCV cannot open it (no such camera or unreachable stream, or this OpenCV build lacks "
                "the backend: cameras need V4L2/libavdevice, URLs FFmpeg; check cv2.getBuildInformation())"
            )
        return cap, what
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"{path}: cannot open video")
    return cap, str(path)


def read_frames(source: str | Path, max_frames: int | None = None) -> tuple[Iterator[np.ndarray], float, int]:
    """(iterator of (H, W, 3) uint8 RGB frames, fps, frame count or -1) of a video file, camera index or stream
    URL (:func:`is_stream`), at most ``max_frames`` of them; raises ValueError / FileNotFoundError naming it."""
    import cv2

    cap, what = _open(source)
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0) or 25.0
    count = -1 if is_stream(source) else int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or -1)
    if max_frames is not None:
        count = max_frames if count < 0 else min(count, max_frames)
    ok, first = cap.read()
    if not ok:
        cap.release()
        raise ValueError(f"{what}: cannot read any frame from the video")

    def frames() -> Iterator[np.ndarray]:
        try:
            frame, n = first, 0
            while max_frames is None or n < max_frames:
                yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                n += 1
                ok, frame = cap.read()
                if not ok:
                    return
        finally:
            cap.release()

    return frames(), fps, count


def writer_backend() -> str:
    """``"imageio-ffmpeg"`` if imageio and imageio-ffmpeg are installed, else ``"opencv"``."""
    try:
        import imageio.v2  # noqa: F401
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        return "opencv"
    return "imageio-ffmpeg"


class VideoWriter:
    """MP4 writer for RGB uint8 frames of a fixed size (odd sizes are padded by one pixel for yuv420p)."""

    def __init__(self, path: str | Path, fps: float, backend: str | None = None):
        self.path = Path(path)
        self.fps = float(fps)
        self.backend = backend or writer_backend()
        self._w = None
        self._size: tuple[int, int] | None = None

    def _open(self, h: int, w: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.backend == "imageio-ffmpeg":
            import imageio.v2 as iio

            self._w = iio.get_writer(
                str(self.path),
                fps=self.fps,
                codec="libx264",
                pixelformat="yuv420p",
                macro_block_size=1,
                quality=7,
                ffmpeg_log_level="error",
            )
        else:
            import cv2

            self._w = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
            if not self._w.isOpened():
                raise ValueError(f"{self.path}: OpenCV cannot open a video writer (mp4v)")

    def write(self, frame: np.ndarray) -> None:
        h, w = frame.shape[:2]
        ph, pw = h + h % 2, w + w % 2
        if (ph, pw) != (h, w):
            frame = np.pad(frame, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge")
        if self._size is None:
            self._size = (ph, pw)
            self._open(ph, pw)
        elif self._size != (ph, pw):
            raise ValueError(f"video frames must keep one size: {self._size} then {(ph, pw)}")
        if self.backend == "imageio-ffmpeg":
            self._w.append_data(np.ascontiguousarray(frame))
        else:
            import cv2

            self._w.write(cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        if self._w is not None:
            if self.backend == "imageio-ffmpeg":
                self._w.close()
            else:
                self._w.release()
            self._w = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
