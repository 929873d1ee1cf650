"""Start training from existing weights (``train.init_weights``): a bundled name or a ``.safetensors`` file,
also for a model with other classes (fine-tuning to a user's own label set).

Every tensor of the file whose name and shape match the new model's is copied. The class-dependent tensors
(the head: those whose shape depends on the number of classes, found by building the file's model on the meta
device with two other class counts) are copied only when the file's class list is the model's, in the same
order; otherwise they keep the new model's fresh initialisation. Tensors of other shapes (another width or
depth) are skipped too. What was not copied is returned, and printed by the trainer. A calibrated file's logit
offsets (``fpliif calibrate``) are taken out of the copied head first: training starts from the model as it was
trained, and the new weights are calibrated on their own afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..models.checkpoint import WeightsMetadata

MIN_SHARE = 0.5
"""Least share of the model's parameter elements the file must fill (else it is another architecture)."""


@dataclass
class WarmStart:
    """What :func:`init_weights` copied: the file, and the model tensors it did not fill (with the reason)."""

    path: Path
    copied: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    offsets_removed: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        """One line, one per skipped tensor, and one for calibration offsets taken out of the head."""
        head = f"init_weights {self.path}: {len(self.copied)} tensors copied, {len(self.skipped)} re-initialised"
        lines = [head, *(f"  re-initialised {k}: {why}" for k, why in sorted(self.skipped.items()))]
        if self.offsets_removed:
            n = len(self.offsets_removed)
            lines.append(f"  logit offsets of {n} classes taken out of the head (fpliif calibrate)")
        return "\n".join(lines)


def class_dependent(spec: dict[str, Any]) -> set[str]:
    """Names of the tensors of ``spec``'s model whose shape depends on its number of classes (empty if the model
    takes no ``classes`` argument)."""
    import inspect

    import torch

    from .. import models  # the factory: importing it registers the built-in architectures

    if "classes" not in inspect.signature(models.constructor(spec["name"])).parameters:
        return set()
    shapes = []
    for n in (3, 4):
        with torch.device("meta"):
            model = models.make(spec, classes=[f"class{i}" for i in range(n)])
        shapes.append({k: tuple(v.shape) for k, v in model.state_dict().items()})
    return {k for k in shapes[0] if shapes[0][k] != shapes[1].get(k)}


def plan(model: Any, meta: WeightsMetadata, shapes: dict[str, tuple[int, ...]]) -> WarmStart:
    """Which tensors of a file (its metadata ``meta``, its tensors' ``shapes``) fill ``model`` (which may live on the
    meta device) and why the others do not; ValueError if they fill less than :data:`MIN_SHARE` of its parameters.
    The one rule of :func:`check_init_weights` and :func:`init_weights`."""
    file_classes = meta.label_set.classes if meta.label_set is not None else None
    head = set() if file_classes == tuple(model.label_set.classes) else class_dependent(meta.spec)
    own = model.state_dict()
    report = WarmStart(Path(meta.path))
    report.copied = sorted(k for k, s in shapes.items() if k not in head and k in own and tuple(own[k].shape) == s)
    copied = set(report.copied)
    n_file = len(file_classes) if file_classes is not None else "?"
    for k, v in own.items():
        if k in head:
            report.skipped[k] = f"head: other classes ({n_file} in the file, {len(model.label_set.classes)} here)"
        elif k in shapes and k not in copied:
            report.skipped[k] = f"shape {list(shapes[k])} in the file, {list(v.shape)} here"
        elif k not in shapes:
            report.skipped[k] = "not in the file"
    params = dict(model.named_parameters())
    share = sum(params[k].numel() for k in copied if k in params) / max(sum(p.numel() for p in params.values()), 1)
    if share < MIN_SHARE:
        raise ValueError(
            f"{meta.path}: only {100 * share:.0f} % of the model's parameters match the file's "
            f"(another architecture or width? its spec: {meta.spec})"
        )
    return report


def check_init_weights(model: Any, weights: str | Path) -> WarmStart:
    """:func:`plan` from the file's header alone (a bundled name or a path; nothing else is read): what
    ``fpliif train`` checks before it loads anything. FileNotFoundError for a name that is neither."""
    from ..models.checkpoint import read_metadata, tensor_shapes

    meta = read_metadata(weights)
    return plan(model, meta, tensor_shapes(meta.path))


def init_weights(model: Any, weights: str | Path) -> WarmStart:
    """Copy the matching tensors of ``weights`` (a bundled name or a ``.safetensors`` file written by fpliif, checked
    as :func:`fpliif.models.checkpoint.load` does) into ``model`` (:func:`plan`). Logit offsets the file records are
    subtracted from the copied head."""
    import torch

    from ..eval.calibrate import remove_offsets
    from ..models.checkpoint import load

    source = load(weights)
    same_classes = tuple(source.label_set.classes) == tuple(model.label_set.classes)
    removed = remove_offsets(source) if same_classes else {}
    theirs = source.state_dict()
    report = plan(model, source.weights_metadata, {k: tuple(v.shape) for k, v in theirs.items()})
    report.offsets_removed = removed
    with torch.no_grad():
        model.load_state_dict({k: theirs[k] for k in report.copied}, strict=False)
    return report
