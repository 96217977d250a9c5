"""Command line: ``python -m analysis <command>``.

Commands:

* ``data``: fetch and verify every manifest file, then build the processed panels;
  ``data --fetch-only`` skips the build; ``data --check`` only reports the cache (exit 1 unless all ok).

A new command is a function ``_add_<command>(subparsers)`` that registers a parser with
``set_defaults(func=...)``, plus one line in :func:`build_parser`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Mapping
from pathlib import Path

from analysis.fetch import TIMEOUT_S, DataIntegrityError, DataUnavailableError, check_cache, fetch_all
from analysis.manifest import ManifestEntry, load_manifest
from analysis.paths import MANIFEST_PATH, RAW_DIR


def _cmd_data(args: argparse.Namespace) -> int:
    entries = load_manifest(args.manifest)
    cache_dir = args.cache_dir or RAW_DIR
    if args.check:
        return _check(entries, cache_dir)

    try:
        paths = fetch_all(cache_dir=cache_dir, mirror=args.mirror, entries=entries, timeout=args.timeout)
    except (DataUnavailableError, DataIntegrityError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{len(paths)} data files verified in {cache_dir}")
    if args.fetch_only:
        return 0

    # Imported here: the panel builders are heavier and are not needed to fetch or check.
    panels = importlib.import_module("analysis.panels")
    for name, info in panels.build_all().items():
        print(f"panel {name}: {info}")
    return 0


def _check(entries: Mapping[str, ManifestEntry], cache_dir: Path) -> int:
    """Print one line per file (status, name, cached path) and a summary; 0 only if all are ok."""
    results = check_cache(cache_dir=cache_dir, entries=entries)
    width = max((len(name) for name, _ in results), default=0)
    for name, status in results:
        print(f"{status:<8} {name:<{width}}  {Path(cache_dir) / entries[name].filename}")
    counts = {s: sum(1 for _, st in results if st == s) for s in ("ok", "missing", "corrupt")}
    print(
        f"{len(results)} files: {counts['ok']} ok, {counts['missing']} missing, {counts['corrupt']} corrupt"
        f" (cache {cache_dir})"
    )
    if counts["ok"] != len(results):
        print("run `python -m analysis data --fetch-only` to fetch and verify the missing or corrupt files")
        return 1
    return 0


def _add_data(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "data",
        help="fetch and verify the raw data, then build the processed panels",
        description="Fetch every manifest file (cache, then mirror, then download; SHA-256 verified), "
        "then build the processed panels.",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="only report each cached file: ok, missing or corrupt")
    mode.add_argument("--fetch-only", action="store_true", help="fetch and verify, but do not build the panels")
    p.add_argument("--manifest", type=Path, default=MANIFEST_PATH, help="manifest file (default: %(default)s)")
    p.add_argument("--cache-dir", type=Path, default=None, help=f"raw cache (default: {RAW_DIR})")
    p.add_argument(
        "--mirror",
        type=Path,
        default=None,
        help="offline mirror (default: $THIRD_PILLAR_MIRROR, else ../shared/data/mirror)",
    )
    p.add_argument("--timeout", type=float, default=TIMEOUT_S, help="network timeout in seconds (default: %(default)s)")
    p.set_defaults(func=_cmd_data)


def _cmd_notebooks(args: argparse.Namespace) -> int:
    from analysis.notebooks import chapter_notebooks, execute_all

    paths = [p for d in args.paths for p in (chapter_notebooks(d) if d.is_dir() else [d])]
    execute_all(paths)
    return 0


def _add_notebooks(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "notebooks",
        help="execute chapter notebooks in place, top to bottom, in a fresh kernel",
        description="Re-execute notebooks (or every notebook in a folder) and save their outputs.",
    )
    p.add_argument("paths", nargs="+", type=Path, help="notebooks or folders of notebooks")
    p.set_defaults(func=_cmd_notebooks)


def _cmd_verdict(args: argparse.Namespace) -> int:
    from analysis import verdict

    if args.readme:
        verdict.write_readme()
        print(f"rewrote the findings block of {verdict.README_PATH}")
    else:
        print(verdict.readme_summary())
    return 0


def _add_verdict(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "verdict",
        help="print the summary of findings (from the chapters' glue records); --readme writes it into README.md",
    )
    p.add_argument("--readme", action="store_true", help="rewrite the README's findings block")
    p.set_defaults(func=_cmd_verdict)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m analysis", description="Commands of the compendium 'The Third Pillar, Tested'."
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print only errors and results")
    subparsers = parser.add_subparsers(dest="command", metavar="command")
    _add_data(subparsers)
    _add_notebooks(subparsers)
    _add_verdict(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
