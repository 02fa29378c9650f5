"""`python -m fastres.data`: dataset tools.

python -m fastres.data check ROOT [--decode] [--workers N] [--lists DIR]
    find files no loader can decode; exit 0 (all good), 1 (some bad, listed), 2 (usage); entries of
    class folders that are not image files (FIFOs, links to nothing, directories, ...) are listed as skip
python -m fastres.data shard ROOT OUT [--shard-size N] [--decode] [--skip-bad-files]
    check every file, then write webdataset tar shards (+ DALI index files) of ROOT/train and
    ROOT/val; exit 0 (written), 1 (bad files, listed: nothing written), 2 (usage)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import fastres
from fastres import FastresError


def _check(args) -> int:
    from fastres.data.check import check_tree, write_file_list

    lists = _output_dir(args.lists, "--lists") if args.lists else None  # before the long check, not after
    splits, report = check_tree(args.root, decode=args.decode, workers=args.workers, progress=not args.quiet)
    skipped = [item for split in splits.values() for item in split.skipped]
    for path, why in skipped:
        print(f"skip {path}: {why}")
    for path, why in report.odd:
        print(f"odd  {path}: {why}")
    for path, why in report.bad:
        print(f"BAD  {path}: {why}")
    if lists is not None:
        out = lists
        for name, split in splits.items():
            n = write_file_list(split, out / f"{name}.txt", report.bad_paths)
            print(f"wrote {out / f'{name}.txt'} ({n} files, relative to {split.root})")
    depth = "decoded" if args.decode else "header-checked"
    also = f"; {len(skipped)} entries skipped (not image files)" if skipped else ""
    print(f"{report.checked} files {depth}: {len(report.bad)} bad, {len(report.odd)} odd but valid{also}")
    return 1 if report.bad else 0


def _output_dir(path: str, flag: str) -> Path:
    """A folder to write into, made if needed; a file or an unwritable place is a one-line error."""
    from fastres.data.folder import DatasetError, os_problem

    out = Path(path).expanduser()
    if out.exists() and not out.is_dir():
        raise DatasetError(f"{flag} {out} is a file, not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise os_problem(out, e, flag) from None
    return out


def _shard(args) -> int:
    from fastres.data.check import check_files
    from fastres.data.folder import scan_imagenet
    from fastres.data.shards import check_arguments, write_shards

    check_arguments(args.root, args.out, args.shard_size)  # before the long check, not after
    splits = scan_imagenet(args.root, "ROOT")
    paths = [p for split in splits for p, _ in split.samples]
    report = check_files(paths, decode=args.decode, workers=args.workers, progress=not args.quiet, desc="checking")
    for path, why in report.bad:
        print(f"BAD  {path}: {why}")
    if report.bad and not args.skip_bad_files:
        print(
            f"python -m fastres.data shard: {report.summary(limit=3)}; nothing written (DALI would stop at them): "
            "leave them out with --skip-bad-files",
            file=sys.stderr,
        )
        return 1
    if report.bad:
        print(f"leaving out {len(report.bad)} bad files (--skip-bad-files)")
    written = write_shards(args.root, args.out, args.shard_size, exclude=report.bad_paths, splits=splits)
    depth = "decoded" if args.decode else "header-checked"
    for split, shard_paths in written.items():
        print(f"{split}: {len(shard_paths)} shards in {Path(args.out) / split}")
    print(f"{report.checked} files {depth}: {len(report.bad)} bad, {report.checked - len(report.bad)} written")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = fastres.ArgumentParser(
        prog="python -m fastres.data", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="find undecodable files")
    c.add_argument("root", help="ImageNet-layout tree (ROOT/train, ROOT/val) or one split folder")
    c.add_argument("--decode", action="store_true", help="decode every pixel (slower, finds every bad file)")
    c.add_argument("--workers", type=int, default=None, help="processes (default: CPU count)")
    c.add_argument("--lists", metavar="DIR", help="write DIR/<split>.txt file lists without the bad files")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    s = sub.add_parser("shard", help="check every file, then write webdataset tar shards")
    s.add_argument("root", metavar="ROOT", help="ImageNet-layout tree (ROOT/train, ROOT/val)")
    s.add_argument("out", metavar="OUT", help="folder for OUT/train and OUT/val (old shards there are replaced)")
    s.add_argument("--shard-size", type=int, default=1000, help="samples per shard")
    s.add_argument(
        "--decode", action="store_true", help="decode every pixel before writing (slower, finds every bad file)"
    )
    s.add_argument("--skip-bad-files", action="store_true", help="leave bad files out instead of refusing")
    s.add_argument("--workers", type=int, default=None, help="check processes (default: CPU count)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        return _check(args) if args.command == "check" else _shard(args)
    except FastresError as e:
        print(f"python -m fastres.data: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
