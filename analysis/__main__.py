"""Command line: ``python -m analysis <command>``.

Commands:

* ``data``: fetch and verify every manifest file, then build the processed panels;
  ``data --fetch-only`` skips the build; ``data --check`` only reports the cache (exit 1 unless all ok).
  A user's mistake or a refusing file system (read-only, disk full) is reported in one line per
  file, never a traceback, and the exit status is 1.

A new command is a function ``_add_<command>(subparsers)`` that registers a parser with
``set_defaults(func=...)``, plus one line in :func:`build_parser`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import math
import sys
from collections.abc import Mapping
from pathlib import Path

from analysis import paths
from analysis.fetch import (
    TIMEOUT_S,
    DataAccessError,
    DataIntegrityError,
    DataUnavailableError,
    check_cache,
    describe_os_error,
    fetch_all,
    using_cache_dir,
)
from analysis.manifest import ManifestEntry, ManifestError, load_manifest
from analysis.paths import MANIFEST_PATH, RAW_DIR


def _error(text: str) -> int:
    """Print each line of ``text`` as ``error: ...`` on stderr; returns the exit status 1."""
    for line in text.splitlines() or [""]:
        print(f"error: {line}", file=sys.stderr)
    return 1


def _cmd_data(args: argparse.Namespace) -> int:
    try:
        return _data(args)
    except (ManifestError, DataAccessError) as exc:  # already one line per problem
        return _error(str(exc))
    except DataUnavailableError as exc:  # a FileNotFoundError, so before OSError; its own layout
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # anything else the file system refused: name the file, never a traceback
        if not exc.filename:
            return _error(f"{exc}: check the disk and the permissions of {args.cache_dir or paths.RAW_DIR}")
        return _error(describe_os_error(exc, Path(exc.filename), "or pass --cache-dir DIR to use another directory"))


def _data(args: argparse.Namespace) -> int:
    entries = load_manifest(args.manifest)
    cache_dir = Path(args.cache_dir or paths.RAW_DIR)
    if args.check:
        return _check(entries, cache_dir)

    try:
        fetched = fetch_all(
            cache_dir=cache_dir, mirror=args.mirror, entries=entries, timeout=args.timeout, download=args.download
        )
    except (DataUnavailableError, DataIntegrityError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{len(fetched)} data files verified in {cache_dir}")
    if args.fetch_only:
        return 0

    # Imported here: the panel builders are heavier and are not needed to fetch or check.
    panels = importlib.import_module("analysis.panels")
    # The builders read raw files through fetch()'s default cache: point it at the directory just
    # verified, or a --cache-dir run would build from data/raw.
    from analysis.schemas import PanelValidationError, RawInputError

    try:
        with using_cache_dir(cache_dir):
            built = panels.build_all()
    except (RawInputError, PanelValidationError) as exc:
        # An upstream file that changed shape is the user's to see, not a traceback: the message
        # names the file, the column and the rows; nothing half-built is kept (writes are atomic).
        first = str(exc).strip().splitlines()[0]
        print(f"error: {first}", file=sys.stderr)
        return 1
    for name, info in built.items():
        print(f"panel {name}: {info}")
    return 0


def _positive_seconds(text: str) -> float:
    """argparse type for ``--timeout``: a finite number of seconds above zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    # 0 or less makes urllib3 fail deep inside a download; inf or nan would wait forever.
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds (e.g. 30), got {text!r}")
    return value


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
    p.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=TIMEOUT_S,
        help="network timeout in seconds, above 0 (default: %(default)s)",
    )
    p.add_argument(
        "--no-download",
        dest="download",
        action="store_false",
        help="never download: use only the cache and the mirror",
    )
    p.set_defaults(func=_cmd_data)


def _cmd_notebooks(args: argparse.Namespace) -> int:
    from analysis.notebooks import chapter_notebooks, execute

    paths = [p for d in args.paths for p in (chapter_notebooks(d) if d.is_dir() else [d])]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        print(f"error: no such notebook: {', '.join(missing)}", file=sys.stderr)
        return 2
    # In parallel (one worker per core), saved in place; a failure leaves that notebook untouched.
    failed = [r for r in execute(paths, into="inplace", workers=args.workers) if not r.ok]
    for r in failed:
        print(f"\n{r.path} failed:\n{r.error}", file=sys.stderr)
    return 1 if failed else 0


def _add_notebooks(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "notebooks",
        help="execute chapter notebooks in place, top to bottom, in a fresh kernel",
        description="Re-execute notebooks (or every notebook in a folder) and save their outputs.",
    )
    p.add_argument("paths", nargs="+", type=Path, help="notebooks or folders of notebooks")
    p.add_argument("--workers", type=int, default=None, help="notebooks at a time (default: one per core)")
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
