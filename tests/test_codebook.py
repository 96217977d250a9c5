"""The codebook: its structure, its table, and agreement with the real built panels both ways."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis import panels
from analysis.codebook import (
    FRAME_COLUMNS,
    CodebookMismatchError,
    check_codebook,
    codebook_frame,
    load_codebook,
)
from analysis.manifest import load_manifest
from analysis.paths import CROSSWALK_DIR


def test_codebook_covers_every_panel_with_complete_entries():
    book = load_codebook()
    assert set(book) == set(panels.PANELS)
    for spec in book.values():
        for var in spec["variables"]:
            assert str(var["label"]).strip() and str(var["unit"]).strip(), var["name"]


def test_sources_are_manifest_names_crosswalk_files_or_derived():
    known = set(load_manifest())
    crosswalks = {f"crosswalks/{p.name}" for p in CROSSWALK_DIR.iterdir()}
    frame = codebook_frame()
    for _, r in frame.iterrows():
        for src in r["source"].split(", "):
            assert src in known | crosswalks | {"derived"}, f"{r['panel']}.{r['name']}: unknown source {src!r}"


def test_codebook_frame_is_tidy():
    frame = codebook_frame("us_counties_annual")
    assert tuple(frame.columns) == FRAME_COLUMNS
    assert set(frame["panel"]) == {"us_counties_annual"} and frame["name"].is_unique
    assert len(codebook_frame()) == sum(len(s["variables"]) for s in load_codebook().values())
    with pytest.raises(KeyError):
        codebook_frame("nope")


def test_check_codebook_flags_both_directions():
    documented = codebook_frame("us_social_capital_atlas")["name"].tolist()
    df = pd.DataFrame(columns=[*documented[1:], "undocumented_column"])
    with pytest.raises(CodebookMismatchError) as exc:
        check_codebook("us_social_capital_atlas", df)
    assert exc.value.mismatches == {"missing_in_codebook": ["undocumented_column"], "missing_in_data": [documented[0]]}
    assert "undocumented_column" in str(exc.value) and documented[0] in str(exc.value)
    out = check_codebook("us_social_capital_atlas", df, raise_on_mismatch=False)
    assert out["missing_in_data"] == [documented[0]]


@pytest.mark.parametrize("name", panels.PANELS)
def test_codebook_matches_real_panel(name):
    df = panels.load(name)
    assert check_codebook(name, df) == {"missing_in_codebook": [], "missing_in_data": []}
    # and in the same order, so that the rendered codebook reads like the data
    assert codebook_frame(name)["name"].tolist() == list(df.columns)
