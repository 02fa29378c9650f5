"""`python -m fastres.data`: dataset tools.

python -m fastres.data check ROOT [--decode] [--workers N] [--lists DIR]
    find files no loader can decode; exit 0 (all good), 1 (some bad, listed), 2 (usage)
python -m fastres.data shard ROOT OUT [--shard-size N]
    write webdataset tar shards (+ DALI index files) of ROOT/train and ROOT/val
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fastres import FastresError


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _check(args) -> int:
    from fastres.data.check import check_tree, write_file_list

    splits, report = check_tree(args.root, decode=args.decode, workers=args.workers, progress=not args.quiet)
    for path, why in report.odd:
        print(f"odd  {path}: {why}")
    for path, why in report.bad:
        print(f"BAD  {path}: {why}")
    if args.lists:
        out = Path(args.lists)
        out.mkdir(parents=True, exist_ok=True)
        for name, split in splits.items():
            n = write_file_list(split, out / f"{name}.txt", report.bad_paths)
            print(f"wrote {out / f'{name}.txt'} ({n} files, relative to {split.root})")
    depth = "decoded" if args.decode else "header-checked"
    print(f"{report.checked} files {depth}: {len(report.bad)} bad, {len(report.odd)} odd but valid")
    return 1 if report.bad else 0


def _shard(args) -> int:
    from fastres.data.shards import write_shards

    for split, paths in write_shards(args.root, args.out, shard_size=args.shard_size).items():
        print(f"{split}: {len(paths)} shards in {Path(args.out) / split}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(
        prog="python -m fastres.data", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="find undecodable files")
    c.add_argument("root", help="ImageNet-layout tree (ROOT/train, ROOT/val) or one split folder")
    c.add_argument("--decode", action="store_true", help="decode every pixel (slower, finds every bad file)")
    c.add_argument("--workers", type=int, default=None, help="processes (default: CPU count)")
    c.add_argument("--lists", metavar="DIR", help="write DIR/<split>.txt file lists without the bad files")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    s = sub.add_parser("shard", help="write webdataset tar shards")
    s.add_argument("root")
    s.add_argument("out")
    s.add_argument("--shard-size", type=int, default=1000, help="samples per shard")
    args = parser.parse_args(argv)
    try:
        return _check(args) if args.command == "check" else _shard(args)
    except FastresError as e:
        print(f"python -m fastres.data: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
