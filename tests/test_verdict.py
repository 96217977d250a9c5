"""The verdict (Chapter 13) and the README's summary come from the chapters' own glue records."""

import nbformat
import pytest

from analysis import verdict
from analysis.hypotheses import hypotheses_table


def test_every_hypothesis_has_a_verdict_with_evidence_on_record():
    entries = verdict.load_verdict()
    assert list(entries) == list(hypotheses_table().index)
    for hid, entry in entries.items():
        assert entry["verdict"] and entry["confidence"], hid
        assert {e["side"] for e in entry["evidence"]} <= {"for", "against"}
        for item in entry["evidence"]:
            verdict.render_evidence(item)  # every key exists in that chapter's glue records


def test_readme_summary_is_the_verdict():
    assert verdict.readme_block() == verdict.readme_summary(), (
        "README.md's findings differ from Chapter 13's evidence; run `python -m analysis verdict --readme`"
    )


def _notebook_with_glue(tmp_path, records):
    """A synthetic executed notebook holding glue records as myst_nb writes them."""
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("glue(...)")
    cell.outputs = [nbformat.v4.new_output(
        "display_data", data={"application/papermill.record/text/plain": text},
        metadata={"scrapbook": {"name": name, "mime_prefix": "application/papermill.record/"}})
        for name, text in records.items()]
    nb.cells.append(cell)
    nbformat.write(nb, tmp_path / "99_synthetic.ipynb")


def test_glue_records_are_parsed_including_numpy_reprs(tmp_path):
    _notebook_with_glue(tmp_path, {"a": "np.float64(0.125)", "b": "3", "c": "'p < 0.001'"})
    values = verdict.glued_values("99_synthetic", tmp_path)
    assert values == {"a": 0.125, "b": 3, "c": "p < 0.001"}
    item = {"chapter": "99_synthetic", "text": "a = {a:.2f}, b = {b:d}"}
    assert verdict.render_evidence(item, tmp_path) == "a = 0.12, b = 3"


def test_a_missing_key_or_chapter_is_a_clear_error(tmp_path):
    _notebook_with_glue(tmp_path, {"a": "1.0"})
    with pytest.raises(verdict.VerdictError, match=r"no glued value \['zzz'\]"):
        verdict.render_evidence({"chapter": "99_synthetic", "text": "{zzz:.1f}"}, tmp_path)
    with pytest.raises(verdict.VerdictError, match="no chapter notebook"):
        verdict.glued_values("98_missing", tmp_path)


def test_styled_table_keeps_every_hypothesis_and_column():
    html = verdict.styled(verdict.evidence_table()).to_html()
    for hid in hypotheses_table().index:
        assert f">{hid}<" in html
    assert "verdict (confidence)" in html and "text-align: left" in html


def test_every_stated_significance_and_direction_holds():
    # The verdict and the README say "significant", "lower", "ruled out"...: each such line lists
    # the glued numbers that make it true, and they must (re-checked whenever a chapter changes).
    failures = [f for entry in verdict.load_verdict().values() for item in entry["evidence"]
                for f in verdict.check_claims(item)]
    assert failures == []
    assert verdict.unchecked_claims() == []


def test_a_contradicted_claim_fails(tmp_path):
    _notebook_with_glue(tmp_path, {"p": "0.088", "b": "-0.18", "lo": "-0.30", "bound": "-0.275"})
    ok = {"chapter": "99_synthetic", "text": "not significant by state (p = {p:.3f})", "claims": ["p >= 0.05"]}
    assert verdict.check_claims(ok, tmp_path) == []
    wrong = {"chapter": "99_synthetic", "text": "significant (p = {p:.3f})", "claims": ["p < 0.05"]}
    assert verdict.check_claims(wrong, tmp_path) == ["99_synthetic: claim 'p < 0.05' is false (p = 0.088)"]
    beyond = {"chapter": "99_synthetic", "text": "ruled out", "claims": ["lo > bound"]}
    assert "is false" in verdict.check_claims(beyond, tmp_path)[0]
    unknown = {"chapter": "99_synthetic", "text": "x", "claims": ["zz < 1"]}
    assert "did not glue" in verdict.check_claims(unknown, tmp_path)[0]
    assert verdict.unchecked_claims({"H9": {"evidence": [{"text": "significant at 5%"}]}}) == [
        "H9: significant at 5%..."]


def test_chapters_are_numbered_as_the_book_numbers_them():
    numbers = verdict.chapter_numbers()
    assert numbers["01_third_pillar"] == 1 and numbers["06b_long_run"] == 7
    assert numbers["13_verdict"] == max(numbers.values())
