"""``fpliif data prepare`` and ``fpliif data check``, and the dataset options every command that reads a dataset
shares (:func:`dataset_options`)."""

from __future__ import annotations

import argparse
import sys

from ..cli import progress_options, workers_options
from .layouts import LAYOUTS, SPLITS, check_cache_option, check_classes_option, resolve_layout

CACHE_HELP = (
    "celebamask-hq: the merged-mask cache folder that `fpliif data prepare --cache DIR` wrote, if not a default place"
)
"""The help of ``--cache`` where a dataset is read (``fpliif data check``, ``fpliif eval``, ``fpliif calibrate``)."""


def add_cache_option(parser: argparse.ArgumentParser, help: str = CACHE_HELP) -> None:
    """``--cache DIR``: the celebamask-hq merged-mask cache folder (:mod:`.celebamask`)."""
    parser.add_argument("--cache", default=None, metavar="DIR", help=help)


def dataset_options() -> argparse.ArgumentParser:
    """Parent parser of the commands that read a dataset: ``--data ROOT`` (repeatable: several roots read as
    one dataset), ``--layout`` (default ``auto``: detected from the folders, :func:`.layouts.resolve_layout`),
    ``--workers N`` (processes that read the data; 0: this process; default, as the library's: min(2, CPUs))
    and ``--no-progress`` (those two from :mod:`fpliif.cli`'s shared parents)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--data",
        required=True,
        action="append",
        metavar="ROOT",
        help="dataset root folder; repeat it to read several roots as one dataset (same layout and classes)",
    )
    p.add_argument(
        "--layout", choices=("auto", *LAYOUTS), default="auto", help="dataset layout (default: auto, detected)"
    )
    return argparse.ArgumentParser(add_help=False, parents=[p, workers_options(), progress_options()])


def cmd_check(args: argparse.Namespace) -> int:
    from ..cli import print_json
    from .check import check_dataset, format_report

    layout = resolve_layout(args.data, args.layout)
    check_classes_option(args.classes, layout)
    check_cache_option(args.cache, layout)
    splits = [s.strip() for s in args.split.split(",") if s.strip()] if args.split else None
    report = check_dataset(
        args.data,
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
    """Prepare each ``--data`` root; exit 1 if any has bad samples (0 with ``--skip-bad``)."""
    layout = resolve_layout(args.data, args.layout)
    if layout != "celebamask-hq":
        print(f"{', '.join(args.data)}: layout {layout}: nothing to prepare (only celebamask-hq needs merged masks)")
        return 0
    return max(_prepare_root(root, args) for root in args.data)


def _prepare_root(root: str, args: argparse.Namespace) -> int:
    from .celebamask import prepare

    result = prepare(root, cache=args.cache, workers=args.workers, progress=not args.no_progress)
    print(f"cache    {result.cache_dir}")
    print(f"masks    {result.total} samples: {result.built} merged, {result.reused} reused from a valid cache")
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
    all_splits = sorted({s for v in SPLITS.values() for s in v})
    parent = dataset_options()

    p = dsub.add_parser(
        "check", parents=[parent], help="decode every pair; class statistics and bad files (exit 1 if any)"
    )
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
    add_cache_option(p)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_check)

    p = dsub.add_parser(
        "prepare", parents=[parent], help="CelebAMask-HQ: merge the part PNGs into cached index masks once"
    )
    add_cache_option(
        p,
        help="cache folder (default ROOT/fpliif-cache if writable, else the user cache dir); pass the same DIR to "
        "`fpliif eval`/`fpliif data check` (--cache) and `fpliif train` (data.cache=DIR)",
    )
    p.add_argument(
        "--skip-bad", action="store_true", help="exit 0 even if some samples' parts cannot be merged (listed)"
    )
    p.set_defaults(func=cmd_prepare)
