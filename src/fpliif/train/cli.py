"""``fpliif train --config CONFIG.yaml [key=value ...] [--dry-run]``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from ..cli import progress_options, workers_options
from ..data.layouts import LAYOUTS


def cmd_train(args: argparse.Namespace) -> int:
    from ..cli import check_output_path
    from .config import load_config
    from .trainer import train

    overrides = list(args.overrides)
    if args.out is not None:
        check_output_path(args.out, "--out", folder=True)
        overrides.append(f"out={json.dumps(args.out)}")
    if args.data:  # JSON is YAML: any path survives the override parser
        overrides.append(f"data.root={json.dumps(args.data[0] if len(args.data) == 1 else args.data)}")
    if args.layout:
        overrides.append(f"data.layout={args.layout}")
    if args.workers is not None:
        overrides.append(f"data.workers={args.workers}")
    cfg = load_config(args.config, overrides)
    check_output_path(str(cfg["out"]), "--out" if args.out is not None else "out", folder=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    if args.dry_run:
        from .config import dump_config
        from .preflight import check_run

        checked = check_run(cfg, resume=args.resume, world=int(os.environ.get("WORLD_SIZE", "1")))  # as a run does
        if checked.warm_start is not None:
            print(checked.warm_start.summary(), file=sys.stderr)
        sys.stdout.write(dump_config(cfg))
        return 0
    record = train(cfg, resume=args.resume, progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    if record.get("finished_before"):
        epochs = cfg["train"]["epochs"]
        print(f"nothing to do: {cfg['out']} already trained {record['epoch']} epochs (train.epochs={epochs})")
    elif record:
        best = record.get("best_val_mean_f1")
        print(
            f"done: epoch {record['epoch']}, last loss {record['loss']:.4f}"
            + (f", best val mean F1 {best:.2f}" if best is not None and best >= 0 else "")
            + f"; checkpoints in {cfg['out']}"
        )
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        parents=[workers_options("the config's data.workers"), progress_options()],
        help="train a model from a YAML config (torchrun-aware)",
    )
    p.add_argument("--config", required=True, help="YAML config (see configs/)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.epochs=10 data.root=/data/x")
    p.add_argument("--out", help="run directory (same as out=DIR)")
    p.add_argument(
        "--data", action="append", metavar="ROOT", help="dataset root, repeatable (same as data.root=ROOT or [A,B])"
    )
    p.add_argument("--layout", choices=("auto", *LAYOUTS), help="dataset layout (same as data.layout=...)")
    p.add_argument("--resume", action="store_true", help="continue the run in the output directory from last.pt")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="run the checks a run makes before its first step (config, dataset roots and file lists, classes, "
        "init_weights, output directory), print the resolved config as YAML and exit; writes nothing",
    )
    p.set_defaults(func=cmd_train)
