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
