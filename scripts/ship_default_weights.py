"""Copy a training run's best weights into the package as the bundled default model (fp16), or as another bundled
name with ``--out src/fpliif/weights/NAME.safetensors`` (then ``--weights NAME`` everywhere).

    python scripts/ship_default_weights.py runs/default_model/best.safetensors

Keeps the run's metadata (config, epoch, validation mean F1, input size) and adds provenance: the git
commit of the training code and the command that produced the weights.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

import fpliif
from fpliif.models.checkpoint import WRITTEN_KEYS
from fpliif.models.pretrained import DEFAULT_NAME, WEIGHTS_DIR
from fpliif.train.provenance import code_version


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights", help="best.safetensors of a finished (or running) fpliif train run")
    ap.add_argument(
        "--command", default="fpliif train --config configs/default_model.yaml", help="the training command to record"
    )
    ap.add_argument("--out", default=str(WEIGHTS_DIR / f"{DEFAULT_NAME}.safetensors"))
    ap.add_argument(
        "--git-commit",
        help="the commit of the training code, for a run started from a snapshot outside git (its file says 'unknown')",
    )
    args = ap.parse_args()
    model = fpliif.load(args.weights)
    meta = {k: v for k, v in model.weights_metadata.items() if k not in WRITTEN_KEYS}  # save() writes those
    meta.setdefault("git_commit", "unknown (run predates commit recording)")
    if args.git_commit:
        meta["git_commit"] = args.git_commit
    meta.update(
        {
            "training_command": args.command,
            "shipped_at_commit": code_version(),
            "licence": "non-commercial research/education (CelebAMask-HQ terms)",
            "source_run": str(Path(args.weights)),
        }
    )
    fpliif.save(model, args.out, metadata=meta, dtype=torch.float16)
    print(
        f"wrote {args.out} ({Path(args.out).stat().st_size / 1e6:.1f} MB), epoch {meta.get('epoch')}, "
        f"val mean F1 {meta.get('val_mean_f1')}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
