"""The service's routes: ``POST /v1/parse``, ``GET /v1/model``, ``GET /healthz`` and the page at ``/``.

:func:`build_router` makes them for one app's :class:`~fpliif.serve.engine.Engine` and settings (the ``size``
bound of ``/v1/parse`` is the server's ``max_size``); :func:`fpliif.serve.app.create_app` includes them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel

from ..labels import remap_targets
from .engine import Engine, ParseOptions, ParseOutput, label_options
from .imaging import ApiError, open_upload, supported_formats_text, upload_warnings
from .settings import ServeSettings
from .upload import FIELD, read_upload

STATIC_DIR = Path(__file__).parent / "static"
PARSE_PARAMS = (
    "size",
    "aligned",
    "format",
    "overlay",
    "rle",
    "alpha",
    "legend",
    "tta",
    "decode",
    "labels",
    "mask",
    "context",
    "feather",
    "keep_detached",
    "extend",
)
PAGE_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
)

PARSE_DOC = f"""Parse the face(s) in an uploaded image.

Send the image as multipart form field `{FIELD}` ({supported_formats_text()}), e.g.
`curl -F {FIELD}=@photo.jpg 'http://127.0.0.1:8000/v1/parse?format=json'`.

* `aligned=false` (default): a photo. Faces are detected, parsed and pasted back; pixels outside every face
  are background. A photo without faces gives 200 with zero faces and a `message`.
  `size`: if given, the photo is first shrunk (never enlarged) so that its longer side is at most `size`.
* `aligned=true`: the upload is one aligned face crop (CelebAMask-HQ framing: whole head, some neck); no
  detection. `size`: the output is `size` x `size` pixels (default: the upload's own size, which must then
  be at most the server's `max_size` per side); the implicit decoder is queried at the output's pixel
  centres, so any resolution works.
* Work limit: a request may cost at most the server's `max_points` decoder queries (`GET /v1/model`, under
  `limits`): output pixels of each face (at most 512 x 512 for a large face in a photo), twice with `tta`.
  Aligned requests are checked before anything runs (422 for an explicit `size`, 413 when the upload's size
  implies it); photos right after detection (413, naming the number of faces).
* `tta=true`: flip test-time augmentation: each face crop is parsed as is and mirrored, and the two
  probability maps are averaged (left/right classes swapped back); about twice the parse time. Default:
  the server's setting (`fpliif serve --tta`; `GET /v1/model` shows it under `defaults`).
* `decode=dense` decodes every output pixel; `decode=adaptive` decodes a coarse grid and then re-queries the
  implicit decoder only where the prediction is uncertain (near part boundaries), refining coarse to fine:
  much less work, labels almost always identical; implicit models (FP-LIIF) only: with a dense model (SegFace,
  STN-iCNN) it is answered 422. Default: the server's setting (`fpliif serve --decode`), else the model's.
* `context=false` (photos): labels end at each face's crop window. By default (the parser's `context`) a second
  window 1.5 times as large labels hair, hat, neck and clothes beyond it; it counts against `max_points`.
* `feather=0.15` (photos, 0 to 1): the face window's outer band, in half-sides, where its labels are blended
  into the context window's (0: a hard switch at the window's edge); default: the parser's (0.15).
* `keep_detached=true` (photos): keep labelled regions that reach no face. By default (the parser's
  `drop_detached`) a region of labels that holds no skin, eye, brow, nose, lip or mouth pixel inside a face's box
  (e.g. "hair" on a curtain) becomes background.
* `extend=false` (photos): labels end at the context windows. By default (the parser's `extend`) clothes, hair and
  neck go on past them where the photo does (GrabCut seeded with the parser's labels; docs/detection.md).
* `labels=lapa|helen|coarse|inner|celebamask-hq`: every output in that label set, merged from the model's classes
  (`fpliif.labels.REMAPS`): class indices, palette, overlay colours, `classes`, `class_share`, mask names.
* `mask=hair,skin` (class names of the output label set): with `format=png`, a binary PNG (8-bit grey, 255 =
  any of the named classes, their union); with `format=json`, `"masks": {{"size": [H, W], "order":
  "row-major", "masks": [{{"index", "class", "size", "counts"}}]}}`, one RLE mask per named class (as `rle`).
  Unknown names are answered 422 naming the closest class.

Output (`format`, `overlay`):

* `format=png` (default): an 8-bit index PNG, pixel value = class index (see `GET /v1/model`), with the
  class palette embedded. Headers `X-Fpliif-Faces` (face count), without faces `X-Fpliif-Message`, and
  `X-Fpliif-Warning` with the `warnings` of the JSON answer (`; `-separated).
* `overlay=true` (with `format=png`): an RGB PNG of the image with the class colours blended in (`alpha`),
  face boxes outlined, and a legend panel if `legend=true`.
* `format=json`: `{{"mode", "size": [W, H], "input_size": [W, H], "num_faces", "faces": [{{"box", "score", "crop",
  "landmarks"?, "angle"?, "context"?, "class_share"}}], "class_share", "classes", "colors", "label_set", "tta",
  "decode", "message"?, "rle"?, "masks"?, "timing_ms", "warnings"?}}` (`colors`: one RGB triple per class of the
  output label set, the PNG palette's; `GET /v1/model` lists the label sets `labels` takes under `label_sets`).
  `size` is the returned label map's; `input_size` the upload's own, as displayed (EXIF orientation applied),
  before any shrinking by `size`. Boxes, crop and context windows (`[x1, y1, x2, y2]`; a window may reach past the
  image, so its values can be negative or beyond `size`) are in the pixels of the returned label map; `class_share`
  values are pixel fractions per class. `warnings` (only when there is one): a list of sentences about the upload,
  e.g. `"3 frames (GIF); the first is parsed"` for an animated GIF or WebP or a multi-page TIFF (`fpliif parse`
  logs the same; `fpliif parse --video` parses every frame).
  `rle=true` adds `"rle": {{"size": [H, W], "order": "row-major", "masks": [{{"index", "class", "size",
  "counts"}}]}}`, one mask per class present: COCO-style *uncompressed* RLE, but scanned **row-major**
  (x fastest; COCO is column-major). `counts` alternates runs of 0 and 1 starting with 0s (a leading 0
  when the first pixel is inside) and sums to H*W. With PNG outputs `rle` is accepted and ignored.

Errors (JSON `{{"error", "detail"}}`): 400 malformed multipart body; 408 the upload did not arrive
within the server's upload timeout; 413 upload too large, too many pixels, an implied output over
`max_size`, or more work than `max_points`; 415 not multipart, or the file is not a supported image
(declared type and content are both checked); 422 empty/corrupt image, missing `{FIELD}` field, bad or
unknown or repeated query parameters, an explicit `size` needing more work than `max_points`; 500 an unexpected server
error (JSON too); 503 too many requests waiting; 504 the parse did not finish within the server's timeout
(the work is stopped).
"""


class ErrorBody(BaseModel):
    error: str
    detail: str


def _error_responses() -> dict[int | str, dict[str, Any]]:
    reasons = {
        400: "malformed multipart body",
        408: "the upload did not arrive within the server's upload timeout",
        413: "upload too large, too many pixels, implied output too large, or over the work budget",
        415: "not multipart/form-data, or not a supported image type",
        422: "empty or undecodable image, missing 'file' field, invalid query parameters, size over the budget",
        500: "unexpected server error",
        503: "too many requests waiting for a worker",
        504: "the parse did not finish within the server's timeout",
    }
    return {code: {"model": ErrorBody, "description": text} for code, text in reasons.items()}


PARSE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "index PNG, overlay PNG or JSON (see the description)",
        "content": {
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "application/json": {"schema": {"type": "object"}},
        },
    },
    **_error_responses(),
}
PARSE_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [FIELD],
                    "properties": {FIELD: {"type": "string", "format": "binary", "description": "the image"}},
                }
            }
        },
    }
}


def check_aligned_cost(upload_size: tuple[int, int], size: int | None, tta: bool, settings: ServeSettings) -> None:
    """Before any work: an aligned request's output (``size``, or the upload's own size) obeys ``max_size``
    (413 when implied) and its decoder queries the ``max_points`` budget (422 for an explicit ``size``, 413
    when the upload implies it)."""
    w, h = (int(v) for v in upload_size)
    largest = min(settings.max_size, math.isqrt(settings.max_points // (2 if tta else 1)))  # size allowed by both
    if size is None and max(w, h) > settings.max_size:
        raise ApiError(
            413,
            "too_large",
            f"aligned=true without size outputs the upload's own size, {w}x{h}; this server's largest output side "
            f"is {settings.max_size} (fpliif serve --max-size): pass size={largest} or less, or upload a "
            "smaller crop",
        )
    ow, oh = (w, h) if size is None else (size, size)
    points = ow * oh * (2 if tta else 1)
    if points > settings.max_points:
        asked = f"aligned=true&size={size}" if size is not None else f"aligned=true (the upload's size, {w}x{h})"
        raise ApiError(
            413 if size is None else 422,
            "over_budget",
            f"{asked} needs {points:,} decoder queries ({ow}x{oh} output pixels{' x 2 for tta' if tta else ''}); "
            f"this server allows at most {settings.max_points:,} per request (fpliif serve --max-points): "
            f"pass size={largest} or less",
        )


def check_query(request: Request, fmt: str, overlay: bool, mask: str | None) -> None:
    """422 for an unknown query parameter or a combination of them that has no output."""
    unknown = sorted(set(request.query_params) - set(PARSE_PARAMS))
    if unknown:
        raise ApiError(422, "invalid_parameter", f"unknown query parameter(s) {unknown}; known: {list(PARSE_PARAMS)}")
    repeated = sorted(k for k in set(request.query_params) if len(request.query_params.getlist(k)) > 1)
    if repeated:
        raise ApiError(422, "invalid_parameter", f"query parameter(s) {repeated} given more than once: pass each once")
    if overlay and fmt != "png":
        raise ApiError(422, "invalid_parameter", "overlay=true returns a PNG: use it with format=png")
    if mask is not None and overlay:
        raise ApiError(422, "invalid_parameter", "mask returns a binary PNG (or JSON masks): not with overlay=true")


async def run_parse(request: Request, engine: Engine, opts: ParseOptions) -> Response:
    """Read the upload (bounded), check its cost, parse it on a worker and answer."""
    settings = engine.settings
    upload = await read_upload(
        request.headers.get("content-type"),
        request.headers.get("content-length"),
        request.stream(),
        settings.max_upload_bytes,
        settings.upload_timeout,
    )
    img = open_upload(upload.data, upload.content_type, settings.max_pixels)
    if opts.aligned:
        check_aligned_cost(img.size, opts.size, opts.tta, settings)
    fmt = img.format

    def work() -> tuple[ParseOutput, list[str]]:
        return engine.parse(img, opts), upload_warnings(upload.data, fmt)

    out, warnings = await engine.run(work, disconnected=request.is_disconnected)
    headers = {"Cache-Control": "no-store", "X-Fpliif-Faces": str(out.faces)}
    if out.message:
        headers["X-Fpliif-Message"] = _ascii(out.message)
    if warnings:
        headers["X-Fpliif-Warning"] = _ascii("; ".join(warnings))
    if out.payload is not None:
        return JSONResponse({**out.payload, **({"warnings": warnings} if warnings else {})}, headers=headers)
    kind = "mask" if opts.mask and opts.fmt == "png" else "overlay" if opts.overlay else "labels"
    headers["Content-Disposition"] = f'inline; filename="{kind}.png"'
    return Response(out.body, media_type=out.media_type, headers=headers)


def _ascii(text: str) -> str:
    """``text`` as a header value (non-ASCII characters as ``?``)."""
    return text.encode("ascii", "replace").decode("ascii")


def build_router(engine: Engine) -> APIRouter:
    """The routes of one app, serving ``engine`` under its settings."""
    settings = engine.settings
    router = APIRouter()

    @router.get("/healthz", summary="Liveness and load")
    async def healthz() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": engine.info["name"],
            "workers": settings.workers,
            "busy": engine.busy,
            "waiting": engine.waiting,
            "served": engine.served,
        }

    @router.get("/v1/model", summary="The served model: classes, colours, size, limits")
    async def model() -> dict[str, Any]:
        return {
            **engine.info,
            "limits": {
                "max_upload_bytes": settings.max_upload_bytes,
                "max_pixels": settings.max_pixels,
                "max_size": settings.max_size,
                "max_points": settings.max_points,
                "timeout_s": settings.timeout,
                "upload_timeout_s": settings.upload_timeout,
                "header_timeout_s": settings.header_timeout,
                "workers": settings.workers,
            },
            "defaults": {"tta": settings.tta, "decode": engine.decode},
        }

    @router.post(
        "/v1/parse",
        summary="Parse the faces in an uploaded image",
        description=PARSE_DOC,
        response_class=Response,
        responses=PARSE_RESPONSES,
        openapi_extra=PARSE_BODY,
    )
    async def parse(
        request: Request,
        size: int | None = Query(
            None,
            ge=8,
            le=settings.max_size,
            description="aligned=true: output side in pixels (default: the upload's size); "
            "aligned=false: shrink the photo so its longer side is at most this",
        ),
        aligned: bool = Query(False, description="true: the upload is an aligned face crop (no detection)"),
        fmt: Literal["png", "json"] = Query("png", alias="format", description="png (label map) or json"),
        overlay: bool = Query(
            False, description="return the colour overlay as an RGB PNG (format=png only: 422 with format=json)"
        ),
        rle: bool = Query(
            False,
            description="format=json: add per-class row-major RLE masks (PNG outputs have no place for them: "
            "ignored there)",
        ),
        alpha: float = Query(0.5, ge=0.0, le=1.0, description="overlay=true: opacity of the colours"),
        legend: bool = Query(False, description="overlay=true: add a legend panel on the right"),
        tta: bool | None = Query(
            None,
            description="flip test-time augmentation: also parse the mirrored crop and average (about 2x the "
            "time; default: the server's setting)",
        ),
        decode: Literal["dense", "adaptive"] | None = Query(
            None,
            description="dense: decode every pixel; adaptive: coarse to fine, re-querying the decoder only where "
            "the prediction is uncertain (default: the server's setting)",
        ),
        labels: str | None = Query(
            None,
            description="output label set, merged from the model's classes: lapa, helen, coarse, inner or "
            "celebamask-hq (default: the model's own)",
            json_schema_extra={"enum": remap_targets(engine.parser.label_set)},  # those this model maps to
        ),
        mask: str | None = Query(
            None,
            description="comma-separated class names of the output label set: format=png returns their union as "
            "a binary PNG, format=json adds one RLE mask per name under 'masks'",
        ),
        context: bool | None = Query(
            None,
            description="photos: label hair, hat, neck and clothes beyond each face's crop window from a window 1.5 "
            "times as large (default: the parser's setting, on; counts against max_points)",
        ),
        feather: float | None = Query(
            None,
            ge=0.0,
            le=1.0,
            description="photos with context: width (half-sides of the face window) of its outer band blended into "
            "the context window's labels; 0: a hard switch (default: the parser's setting, 0.15)",
        ),
        keep_detached: bool | None = Query(
            None,
            description="photos: keep labelled regions that reach no face (default: the parser's setting, which "
            "turns them into background)",
        ),
        extend: bool | None = Query(
            None,
            description="photos with context: continue clothes, hair and neck past the context windows (default: "
            "the parser's setting, on)",
        ),
    ) -> Response:
        check_query(request, fmt, overlay, mask)
        labels, mask_names = label_options(engine.parser.label_set, labels, mask)
        try:
            decode_mode = engine.decode_mode(decode)
        except ValueError as e:
            raise ApiError(422, "invalid_parameter", str(e)) from None
        tta = settings.tta if tta is None else tta
        opts = ParseOptions(
            aligned,
            size,
            fmt,
            overlay,
            rle,
            alpha,
            legend,
            tta,
            decode_mode,
            labels,
            mask_names,
            context,
            feather,
            keep_detached,
            extend,
        )
        return await run_parse(request, engine, opts)

    @router.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(
            STATIC_DIR / "index.html",
            media_type="text/html",
            headers={"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-cache"},
        )

    return router
