import hashlib
import json

from analysis.hypotheses import additions, equivalence_bounds, hypotheses_table, load_hypotheses


def test_every_hypothesis_says_what_would_refute_it():
    table = hypotheses_table()
    assert list(table.index) == [f"H{i}" for i in range(1, len(table) + 1)]
    assert (table["against"].str.len() > 40).all()
    assert (table["test"].str.contains("Chapter")).all()


def test_equivalence_bounds_cover_the_wave_outcomes():
    bounds = equivalence_bounds()
    assert set(bounds.index) == {"unemployment_rate", "poverty_rate", "child_poverty_rate", "log_median_hh_income"}
    assert (bounds["bound"] > 0).all()


# SHA-256 of what was declared on 2026-11-27 (date, bounds and hypotheses): they never move.
DECLARED_SHA256 = "dff616b7f4209e1957569f9bd75e810a7425e98a90361c138970cc56eb6aa26e"


def test_what_was_declared_has_not_moved():
    doc = load_hypotheses()
    declared = {k: doc[k] for k in ("declared", "smallest_effect_of_interest", "hypotheses")}
    digest = hashlib.sha256(json.dumps(declared, sort_keys=True).encode()).hexdigest()
    assert digest == DECLARED_SHA256, "a pre-declared hypothesis or bound changed: add a dated addition instead"


def test_additions_are_dated_and_explained():
    ids = [a["id"] for a in additions()]
    assert ids and len(ids) == len(set(ids))
    for a in additions():
        assert a["date"] > load_hypotheses()["declared"]
        assert set(a["applies_to"]) <= {f"H{i}" for i in range(1, 9)}
        assert len(a["why"]) > 40 and len(a["text"]) > 40
