"""``make bench``: the performance figures of the book, printed against their budgets.

Budgets are measured here, never asserted in timed tests: a slow machine should not fail CI.
Each figure is measured in a fresh subprocess so that imports and caches are counted honestly.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from analysis.paths import ROOT

_BUILD_ALL = "from analysis.panels import build_all; build_all(force=True)"
_WARM_LOAD = (
    "import time; from analysis.panels import PANELS, load; [load(n) for n in PANELS]; "
    "t = time.perf_counter(); [load(n) for n in PANELS]; print(time.perf_counter() - t)"
)


@dataclass
class Figure:
    what: str
    seconds: float
    budget: float | None = None
    unit: str = "s"

    def line(self) -> str:
        verdict = "" if self.budget is None else ("  within budget" if self.seconds <= self.budget else "  OVER BUDGET")
        budget = "" if self.budget is None else f"  (budget {self.budget:.0f} s)"
        return f"{self.what:<58} {self.seconds:8.2f} {self.unit}{budget}{verdict}"


def _timed(cmd: list[str], env: dict | None = None) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def cold_build() -> Figure:
    with tempfile.TemporaryDirectory() as tmp:
        secs = _timed([sys.executable, "-c", _BUILD_ALL], {"THIRD_PILLAR_PROCESSED": tmp})
    return Figure("cold build of all processed panels from the raw cache", secs, 30)


def warm_load() -> Figure:
    out = subprocess.run([sys.executable, "-c", _WARM_LOAD], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    return Figure("warm load of all processed panels", float(out.strip().splitlines()[-1]), 1)


def book_rebuild() -> Figure:
    subprocess.run(["make", "book"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)  # warm the caches
    return Figure("no-change `make book` rebuild", _timed(["make", "book"]), 20)


def _panel_figures() -> list[Figure]:
    """Estimation budgets of the chapters, measured in this process on the cached panels."""
    from analysis import between_within, dynamic, england, eventstudy, heterogeneity, multiverse, shiftshare, simulation
    from analysis.panels import load

    waves, annual = load("us_counties_waves"), load("us_counties_annual")
    multiverse_secs, multiverse_n = multiverse.bench_multiverse(waves)
    t_fast, t_slow, n_same, gap = multiverse.bench_speedup(waves)
    return [
        Figure("Chapter 3: full table set (outcomes x estimators x covs)", between_within.bench_table_set(waves)),
        Figure("Chapter 3: one TWFE fit, county-clustered SEs (median of 5)", between_within.bench_twfe_fit(waves)),
        Figure("Chapter 4: dynamic-panel GMM fits", dynamic.bench_gmm(waves)),
        Figure("Chapter 5: shift-share IV fits", shiftshare.bench_iv(waves)),
        Figure("Chapter 6: event definition and two event studies", eventstudy.bench_event_study(annual)),
        Figure("Chapter 7: interactions and Romano-Wolf bootstrap", heterogeneity.bench_heterogeneity(waves)),
        Figure("Chapter 8: the whole multiverse, uncached (%d specifications)" % multiverse_n, multiverse_secs, 60),
        Figure("Chapter 8: fast path, %d specifications, one process" % n_same, t_fast),
        Figure("Chapter 8: straightforward linearmodels loop, same %d specs" % n_same, t_slow),
        Figure("Chapter 8: speed-up of the fast path (largest rel. gap %.1e)" % gap, t_slow / t_fast, unit="x"),
        Figure("Chapter 10: cold build of the England panel", england.bench_england_build()),
        Figure("Chapter 12: simulation lab Monte Carlo (default)", simulation.bench_simulation(), 60),
    ]


#: Budgets of the cold build (issue 17): the whole `make book` on a fresh clone on two cores, and
#: each chapter's execution on one worker.
COLD_BUILD_BUDGET_S = 240
CHAPTER_BUDGET_S = 45
BENCH_REPORT = ROOT / "book" / "_generated" / "bench.md"


def _phase(cmd: list[str], cwd: str, env: dict) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def cold_build_phases() -> tuple[list[Figure], list[Figure]]:
    """`make book` on a fresh clone of the committed main, phase by phase (new venv; data from the
    mirror), with the chapters executed twice side by side: one worker (each chapter's own time,
    against its budget) and one per core (what `make book` does). Returns (phases, chapters).
    """
    import json

    from analysis.paths import default_mirror

    mirror = default_mirror()
    with tempfile.TemporaryDirectory() as tmp:
        clone = os.path.join(tmp, "clone")
        subprocess.run(["git", "clone", "-q", str(ROOT), clone], check=True)
        env = {**os.environ, "THIRD_PILLAR_MIRROR": str(mirror) if mirror else ""}
        py = os.path.join(clone, ".venv", "bin", "python")
        install = _phase(["make", "venv"], clone, env)
        data = _phase(["make", "data"], clone, env)
        timings = {}
        for workers in (1, os.cpu_count() or 1):
            out = os.path.join(tmp, f"timings-{workers}.json")
            cache = os.path.join(tmp, f"cache-{workers}") if workers == 1 else os.path.join(clone, "_build", ".jupyter_cache")
            _phase([py, "-m", "analysis.notebooks", "cache", "--workers", str(workers), "--cache-dir", cache,
                    "--timings", out], clone, env)
            with open(out) as fh:
                timings[workers] = json.load(fh)
        sphinx = _phase([os.path.join(clone, ".venv", "bin", "jupyter-book"), "build", ".", "-W", "-n",
                         "--keep-going"], clone, env)
    serial, parallel = timings[1]["wall_seconds"], timings[max(timings)]["wall_seconds"]
    total = install + data + parallel + sphinx
    phases = [
        Figure("cold build: install the lock (uv, hash-checked)", install),
        Figure("cold build: fetch, verify and build the data", data),
        Figure("cold build: execute every chapter, 1 worker", serial),
        Figure(f"cold build: execute every chapter, {max(timings)} workers", parallel),
        Figure("cold build: Sphinx renders from the cache", sphinx),
        Figure(f"cold `make book` on a fresh clone ({os.cpu_count()} cores)", total, COLD_BUILD_BUDGET_S),
        Figure("speed-up of parallel over serial execution", serial / parallel, unit="x"),
    ]
    chapters = [Figure(f"execute {name} (1 worker)", info["seconds"], CHAPTER_BUDGET_S)
                for name, info in timings[1]["notebooks"].items()]
    return phases, chapters


def write_report(figures: list[Figure], path=BENCH_REPORT) -> None:
    """The measured figures as a Markdown table the reproducing appendix includes (generated by
    `make bench`, never typed)."""
    import datetime
    import platform

    rows = ["| measure | value | budget |", "|---|---:|---:|"]
    for f in figures:
        budget = "" if f.budget is None else f"{f.budget:.0f} s" + (" (OVER BUDGET)" if f.seconds > f.budget else "")
        rows.append(f"| {f.what} | {f.seconds:.2f} {f.unit} | {budget} |")
    head = (f"Measured by `make bench` on {datetime.date.today().isoformat()}: {os.cpu_count()} cores, "
            f"{platform.machine()}, Python {platform.python_version()}.\n\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(head + "\n".join(rows) + "\n", encoding="utf-8")


def make_test() -> Figure:
    return Figure("wall time of `make test`", _timed(["make", "test"]), 900)


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m analysis.bench", description="The book's performance figures.")
    parser.add_argument("--cold-only", action="store_true",
                        help="only the cold build by phase (the figures the reproducing appendix shows)")
    args = parser.parse_args(argv)
    print(f"make bench on {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    if args.cold_only:
        phases, chapters = cold_build_phases()
        for figure in phases + chapters:
            print(figure.line(), flush=True)
        write_report(phases + chapters)
        print(f"wrote {BENCH_REPORT.relative_to(ROOT)} (commit it: the reproducing appendix shows it)")
        return
    figures = []
    for measure in (cold_build, warm_load):
        figures.append(measure())
        print(figures[-1].line(), flush=True)
    for figure in _panel_figures():
        figures.append(figure)
        print(figure.line(), flush=True)
    phases, chapters = cold_build_phases()
    for figure in phases + chapters:
        figures.append(figure)
        print(figure.line(), flush=True)
    for measure in (book_rebuild, make_test):
        figures.append(measure())
        print(figures[-1].line(), flush=True)
    write_report(phases + chapters + figures[-2:])
    print(f"wrote {BENCH_REPORT.relative_to(ROOT)} (commit it: the reproducing appendix shows it)")


if __name__ == "__main__":
    main()
