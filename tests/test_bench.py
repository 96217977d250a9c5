"""make bench's report: budgets flagged, figures written for the reproducing appendix."""

from analysis import bench


def test_over_budget_is_printed_and_written(tmp_path):
    slow = bench.Figure("execute 08_how_fragile (1 worker)", 61.0, bench.CHAPTER_BUDGET_S)
    fast = bench.Figure("execute 01_third_pillar (1 worker)", 9.5, bench.CHAPTER_BUDGET_S)
    ratio = bench.Figure("speed-up of parallel over serial execution", 1.83, unit="x")
    assert slow.line().endswith("OVER BUDGET") and fast.line().endswith("within budget")
    report = tmp_path / "bench.md"
    bench.write_report([slow, fast, ratio], report)
    text = report.read_text()
    assert "| execute 08_how_fragile (1 worker) | 61.00 s | 45 s (OVER BUDGET) |" in text
    assert "| execute 01_third_pillar (1 worker) | 9.50 s | 45 s |" in text
    assert "| speed-up of parallel over serial execution | 1.83 x |  |" in text


def test_budgets_are_the_issue_s():
    assert (bench.COLD_BUILD_BUDGET_S, bench.CHAPTER_BUDGET_S) == (240, 45)


def test_the_appendix_shows_the_generated_report():
    # The reproducing appendix includes what `make bench` wrote; the figures are never typed.
    from analysis.paths import ROOT

    appendix = (ROOT / "book" / "appendix_reproducing.md").read_text()
    assert "```{include} _generated/bench.md" in appendix
    report = bench.BENCH_REPORT.read_text()
    assert report.startswith("Measured by `make bench` on ")
    assert "cold `make book` on a fresh clone" in report and "speed-up of parallel over serial" in report
