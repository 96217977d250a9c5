"""analysis.report.glue: the same glued digits on every machine, and never a missing value."""

import math

import numpy as np
import pytest

from analysis import report


@pytest.mark.parametrize(("value", "expected"), [
    (0.01214769124660495, 0.0121477),
    (0.012147691246604947, 0.0121477),  # the other machine's last bits: the same record
    (0.12587712, 0.125877),
    (-0.17861234, -0.178612),
    (49391.4567, 49391.46),
    (1234567.891, 1234567.9),
    (25881.0, 25881.0),
    (0.0, 0.0),
])
def test_stable_number(value, expected):
    assert report.stable_number(value) == expected


def test_glue_rounds_floats_and_keeps_ints_and_text(monkeypatch):
    seen = {}
    monkeypatch.setattr("myst_nb.glue", lambda name, value, display=False: seen.__setitem__(name, value))
    report.glue("a", np.float64(0.01214769124660495))
    report.glue("b", np.int64(12428))
    report.glue("c", "p < 0.001")
    assert seen == {"a": 0.0121477, "b": 12428, "c": "p < 0.001"}
    assert type(seen["b"]) is int


@pytest.mark.parametrize("bad", [math.nan, np.nan, math.inf, -np.inf, None, "", "  "])
def test_glue_refuses_missing_values(monkeypatch, bad):
    monkeypatch.setattr("myst_nb.glue", lambda *a, **k: pytest.fail("a missing value was glued"))
    with pytest.raises(report.GlueError, match="ch3_corr_logpop"):
        report.glue("ch3_corr_logpop", bad)


def test_table_shows_html_and_fixed_precision_text():
    import pandas as pd

    frame = pd.DataFrame({"estimate": [-0.178607123, 0.0123456789], "nobs": [12420, 3089],
                          "reading": ["ruled out", "not identified"]}, index=["unemployment", "poverty"])
    table = report.Table(frame, digits=3, caption="Within-county slopes")
    text = repr(table)
    assert text.splitlines()[0] == "Within-county slopes"
    assert "-0.179" in text and "0.012" in text and "0.1786" not in text
    assert "12420" in text  # integers are not given decimals
    html = table._repr_html_()
    assert "<table" in html and 'class="tp-table"' in html and "-0.179" in html and "0.1786" not in html
    again = report.Table(frame, digits=3)
    assert again.uuid != table.uuid  # two tables on one page never share an id


def test_table_of_a_series_and_missing_values():
    import pandas as pd

    table = report.Table(pd.Series([1.23456, float("nan")], index=["a", "b"], name="x"), digits=2)
    assert "1.23" in repr(table) and "–" in repr(table)
    assert "–" in table._repr_html_()
