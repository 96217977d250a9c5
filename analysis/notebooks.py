"""Execute chapter notebooks top to bottom in fresh kernels, several at a time.

Two destinations, one path:

* ``python -m analysis.notebooks cache`` executes every chapter of ``_toc.yml`` whose code is not
  yet in the execution cache (``_build/.jupyter_cache``, the one ``jupyter-book build`` reads
  with ``execute_notebooks: cache``), with one worker per core; the book build then renders from
  the cache. ``make book`` runs it first.
* ``python -m analysis.notebooks inplace [paths]`` executes and saves the outputs into the
  notebooks themselves (``make notebooks``, before a chapter is committed): nbval compares the
  tagged cells against them, and readers of the repository see them.

Every chapter runs single-threaded BLAS (the Makefile sets it), so two notebooks on two cores do
not fight over threads. A failing notebook fails the run with its traceback, and nothing is
written for it: the cache keeps no failed entry and the committed notebook stays as it was.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import nbformat

from analysis.paths import BOOK_DIR, ROOT

CACHE_DIR = ROOT / "_build" / ".jupyter_cache"
#: Notebooks that read other chapters' committed outputs (the verdict reads their glue records):
#: they run after every other notebook of the same run has finished and been written.
RUN_LAST = ("13_verdict",)
TIMEOUT_S = 1200


@dataclass(frozen=True)
class Run:
    """One notebook's execution: where, how long (s), and the traceback if it failed."""

    path: Path
    seconds: float
    error: str | None = None
    cached: bool = False  # found in the execution cache, not executed

    @property
    def ok(self) -> bool:
        return self.error is None


def chapter_notebooks(book_dir: Path = BOOK_DIR) -> list[Path]:
    return sorted(p for p in Path(book_dir).glob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def toc_notebooks(toc: Path = ROOT / "_toc.yml") -> list[Path]:
    """The notebooks the book builds, in table-of-contents order."""
    from analysis.site import toc_docnames

    paths = [ROOT / f"{d}.ipynb" for d in toc_docnames(toc)]
    return [p for p in paths if p.exists()]


def _execute(path: str, timeout: int) -> tuple[str, str | None, float, str | None]:
    """Worker: run one notebook from its own directory; the executed notebook as JSON text."""
    from jupyter_cache.executors.utils import single_nb_execution

    nb = nbformat.read(path, as_version=4)
    # The same call myst-nb makes for a cache miss, so the cached result is what it would store.
    result = single_nb_execution(nb, cwd=str(Path(path).parent), timeout=timeout, allow_errors=False,
                                 meta_override=True, record_timing=False)
    if result.err is not None:
        return path, None, result.time, result.exc_string or repr(result.err)
    return path, nbformat.writes(nb), result.time, None


def _write_in_place(path: Path, text: str) -> None:
    """Replace ``path`` atomically: an interrupted write leaves the committed version untouched."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text if text.endswith("\n") else text + "\n")  # as committed notebooks end
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _show(path: Path) -> str:
    """A path relative to the project when it is inside it (for messages)."""
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def _cache(cache_dir: Path):
    from jupyter_cache import get_cache

    return get_cache(str(cache_dir))


def _cached(cache, path: Path) -> bool:
    try:
        cache.match_cache_notebook(nbformat.read(path, as_version=4))
        return True
    except KeyError:
        return False


def _longest_first(paths: list[Path], cache) -> list[Path]:
    """Start the slowest chapters first, so two workers finish together (previous run times from
    the cache when known, else the notebook's size as a proxy)."""
    seconds = {}
    if cache is not None:
        for rec in cache.list_cache_records():
            seconds[Path(rec.uri).name] = float((rec.data or {}).get("execution_seconds") or 0)
    return sorted(paths, key=lambda p: (-seconds.get(p.name, 0), -p.stat().st_size, p.name))


def execute(paths: list[Path], *, workers: int | None = None, into: str = "cache",
            cache_dir: Path | None = CACHE_DIR, timeout: int = TIMEOUT_S, log=print) -> list[Run]:
    """Execute ``paths`` with ``workers`` processes (default: one per core) ``into`` the execution
    cache at ``cache_dir`` or ``"inplace"`` (then cached too, unless ``cache_dir`` is None); returns
    one :class:`Run` per notebook, in the order of ``paths``.
    """
    if into not in ("cache", "inplace"):
        raise ValueError(f"into must be 'cache' or 'inplace', not {into!r}")
    if into == "cache" and cache_dir is None:
        raise ValueError("into='cache' needs a cache_dir")
    paths = [Path(p).resolve() for p in paths]
    # In place, the result is cached too: `make notebooks` then `make book` executes once.
    cache = _cache(cache_dir) if cache_dir is not None else None
    runs: dict[Path, Run] = {}
    todo = []
    for p in paths:
        if into == "cache" and _cached(cache, p):
            runs[p] = Run(p, 0.0, cached=True)
        else:
            todo.append(p)
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    if todo:
        log(f"executing {len(todo)} notebook(s) with {workers} worker(s); {len(runs)} from the cache")
    first = [p for p in todo if p.stem not in RUN_LAST]
    last = [p for p in todo if p.stem in RUN_LAST]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for batch in (first, last):
            futures = [pool.submit(_execute, str(p), timeout) for p in _longest_first(batch, cache)]
            for fut in as_completed(futures):
                path, text, seconds, error = fut.result()
                path = Path(path)
                runs[path] = Run(path, seconds, error)
                if error is None:
                    # Only the parent writes: the cache is one SQLite file, and a write is atomic.
                    _store(path, text, seconds, cache, into)
                log(f"{'ok    ' if error is None else 'FAILED'} {seconds:7.1f} s  {_show(path)}")
    return [runs[p] for p in paths]


def _store(path: Path, text: str, seconds: float, cache, into: str) -> None:
    if into == "inplace":
        _write_in_place(path, text)
    if cache is None:
        return
    from jupyter_cache.base import CacheBundleIn

    cache.add_nb_to_project(str(path))
    cache.cache_notebook_bundle(CacheBundleIn(nbformat.reads(text, as_version=4), str(path),
                                              data={"execution_seconds": seconds}),
                                check_validity=False, overwrite=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.notebooks", description=__doc__.split("\n")[0])
    parser.add_argument("into", choices=("cache", "inplace"))
    parser.add_argument("paths", nargs="*", type=Path, help="notebooks (default: every chapter in _toc.yml)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: one per core)")
    parser.add_argument("--cache-dir", type=Path, default=CACHE_DIR, help="execution cache (default: %(default)s)")
    parser.add_argument("--timings", type=Path, default=None,
                        help="write each notebook's seconds and the wall time as JSON (for make bench)")
    args = parser.parse_args(argv)
    if args.workers is not None and args.workers < 1:
        parser.error("--workers must be at least 1")
    missing = [str(p) for p in args.paths if not p.is_file()]
    if missing:
        parser.error(f"no such notebook: {', '.join(missing)}")
    t = time.perf_counter()
    runs = execute(args.paths or toc_notebooks(), workers=args.workers, into=args.into, cache_dir=args.cache_dir)
    wall = time.perf_counter() - t
    failed = [r for r in runs if not r.ok]
    for r in failed:
        print(f"\n{_show(r.path)} failed:\n{r.error}", file=sys.stderr)
    print(f"{len(runs)} notebooks, {len(failed)} failed, {wall:.1f} s wall time")
    if args.timings:
        import json

        doc = {"wall_seconds": wall, "workers": args.workers or os.cpu_count(),
               "notebooks": {r.path.stem: {"seconds": r.seconds, "cached": r.cached, "ok": r.ok} for r in runs}}
        args.timings.write_text(json.dumps(doc, indent=1) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
