from analysis.hypotheses import equivalence_bounds, hypotheses_table


def test_every_hypothesis_says_what_would_refute_it():
    table = hypotheses_table()
    assert list(table.index) == [f"H{i}" for i in range(1, len(table) + 1)]
    assert (table["against"].str.len() > 40).all()
    assert (table["test"].str.contains("Chapter")).all()


def test_equivalence_bounds_cover_the_wave_outcomes():
    bounds = equivalence_bounds()
    assert set(bounds.index) == {"unemployment_rate", "poverty_rate", "child_poverty_rate", "log_median_hh_income"}
    assert (bounds["bound"] > 0).all()
