"""``fpliif data prepare`` and ``fpliif data check``."""

from __future__ import annotations

import argparse
import sys

from .layouts import LAYOUTS, SPLITS, detect_layout


def _layout(args: argparse.Namespace) -> str:
    roots = args.root if isinstance(args.root, list) else [args.root]
    if args.layout != "auto":
        return args.layout
    found = {str(r): detect_layout(r) for r in roots}
    if len(set(found.values())) > 1:
        raise ValueError(f"the roots have different layouts ({found}); pass --layout or check them one by one")
    return next(iter(found.values()))


def cmd_check(args: argparse.Namespace) -> int:
    from ..cli import print_json
    from .check import check_dataset, format_report

    layout = _layout(args)
    splits = [s.strip() for s in args.split.split(",") if s.strip()] if args.split else None
    if args.workers is not None and args.workers < 0:
        raise ValueError("--workers must be >= 0")
    report = check_dataset(
        args.root,
        layout,
        splits=splits,
        classes=args.classes,
        workers=args.workers,
        cache=args.cache,
        progress=not args.no_progress,
    )
    if args.json:
        print_json(report)
    else:
        print(format_report(report))
    return 1 if report["bad"] else 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from .celebamask import prepare

    layout = _layout(args)
    if layout != "celebamask-hq":
        print(f"{args.root}: layout {layout}: nothing to prepare (only celebamask-hq needs merged masks)")
        return 0
    if args.workers is not None and args.workers < 0:
        raise ValueError("--workers must be >= 0")
    result = prepare(args.root, cache=args.cache, workers=args.workers, progress=not args.no_progress)
    print(f"cache    {result.cache_dir}")
    print(
        f"masks    {result.total} samples: {result.built} merged, {result.reused} reused from a valid cache"
    )
    if result.bad:
        print(f"bad ({len(result.bad)}):", file=sys.stderr)
        for path, reason in result.bad:
            print(f"  {path}: {reason}", file=sys.stderr)
        if args.skip_bad:
            print(f"{len(result.bad)} bad sample(s) will be skipped by datasets created with skip_bad=True")
            return 0
        return 1
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser(
        "data",
        help="prepare and check datasets",
        description="Prepare (CelebAMask-HQ merged masks) and check face-parsing datasets.",
    )
    dsub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    layouts = ("auto", *LAYOUTS)
    all_splits = sorted({s for v in SPLITS.values() for s in v})

    p = dsub.add_parser("check", help="decode every pair; class statistics and bad files (exit 1 if any)")
    p.add_argument("root", nargs="+", help="dataset root folder(s): several roots are checked as one dataset")
    p.add_argument("--layout", choices=layouts, default="auto", help="dataset layout (default: detect)")
    p.add_argument(
        "--split",
        default=None,
        help=f"comma-separated splits ({', '.join(all_splits)}; default: all of the layout's)",
    )
    p.add_argument(
        "--classes",
        default=None,
        help="folder layout: label-set name, comma-separated class names or a classes.txt "
        "(default ROOT/classes.txt, else celebamask-hq)",
    )
    p.add_argument("--cache", default=None, help="celebamask-hq: merged-mask cache folder if not the default")
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default min(2, CPUs))")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_check)

    p = dsub.add_parser("prepare", help="CelebAMask-HQ: merge the part PNGs into cached index masks once")
    p.add_argument("root", help="dataset root folder")
    p.add_argument("--layout", choices=layouts, default="auto", help="dataset layout (default: detect)")
    p.add_argument(
        "--cache",
        default=None,
        help="cache folder (default ROOT/fpliif-cache if writable, else the user cache dir)",
    )
    p.add_argument("--workers", type=int, default=None, help="merging processes (default min(2, CPUs))")
    p.add_argument(
        "--skip-bad", action="store_true", help="exit 0 even if some samples' parts cannot be merged (listed)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_prepare)
