"""The parallel notebook runner behind `make book` and `make notebooks` (synthetic notebooks)."""

from __future__ import annotations

import nbformat
import pytest
from jupyter_cache import get_cache

from analysis import notebooks


def _write(path, *sources):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


@pytest.fixture
def book(tmp_path):
    """Synthetic chapters: two that run, one that fails in its second cell."""
    d = tmp_path / "book"
    d.mkdir()
    return {
        "a": _write(d / "a.ipynb", "x = 6 * 7", "print(x)"),
        "b": _write(d / "b.ipynb", "import os; print(os.path.basename(os.getcwd()))"),
        "bad": _write(d / "bad.ipynb", "y = 1", "raise ValueError('synthetic failure')"),
    }


def test_into_cache_runs_in_parallel_and_keeps_no_failed_entry(book, tmp_path):
    cache_dir = tmp_path / "cache"
    runs = notebooks.execute(list(book.values()), workers=2, cache_dir=cache_dir, log=lambda m: None)
    by = {r.path.stem: r for r in runs}
    assert by["a"].ok and by["b"].ok and not by["bad"].ok
    assert "synthetic failure" in by["bad"].error and "ValueError" in by["bad"].error
    cache = get_cache(str(cache_dir))
    # What jupyter-book's cache mode does: match the source notebook to a cached execution.
    _, merged = cache.merge_match_into_notebook(nbformat.read(book["a"], as_version=4))
    assert merged.cells[1].outputs[0]["text"] == "42\n"
    _, merged = cache.merge_match_into_notebook(nbformat.read(book["b"], as_version=4))
    assert merged.cells[0].outputs[0]["text"] == "book\n"  # run from the notebook's own folder
    with pytest.raises(KeyError):
        cache.match_cache_notebook(nbformat.read(book["bad"], as_version=4))
    # A second run executes nothing that is cached.
    again = notebooks.execute([book["a"], book["b"]], cache_dir=cache_dir, log=lambda m: None)
    assert [r.cached for r in again] == [True, True]


def test_in_place_writes_outputs_and_leaves_a_failed_notebook_untouched(book, tmp_path):
    before = book["bad"].read_bytes()
    runs = notebooks.execute([book["a"], book["bad"]], into="inplace", workers=2, cache_dir=None,
                             log=lambda m: None)
    assert [r.ok for r in runs] == [True, False]
    nb = nbformat.read(book["a"], as_version=4)
    assert nb.cells[1].outputs[0]["text"] == "42\n"
    assert [c.execution_count for c in nb.cells] == [1, 2]  # top to bottom, fresh kernel
    assert book["bad"].read_bytes() == before
    assert [p.name for p in book["a"].parent.iterdir() if p.name.endswith(".part")] == []


def test_cli_exits_non_zero_with_the_traceback(book, capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(notebooks, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.setattr(notebooks.execute, "__defaults__", (None, "cache", tmp_path / "cache", 60, print))
    assert notebooks.main(["cache", str(book["bad"]), str(book["a"])]) == 1
    err = capsys.readouterr().err
    assert "bad.ipynb failed" in err and "synthetic failure" in err


def test_cli_rejects_bad_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit):
        notebooks.main(["cache", str(tmp_path / "nope.ipynb")])
    assert "no such notebook" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        notebooks.main(["cache", "--workers", "0"])
    with pytest.raises(ValueError, match="into"):
        notebooks.execute([], into="elsewhere")


def test_the_verdict_runs_after_the_chapters_it_reads(tmp_path, monkeypatch):
    # Chapter 13 reads the other chapters' saved glue records: it must see this run's outputs.
    d = tmp_path / "book"
    d.mkdir()
    ch = _write(d / "03_chapter.ipynb", "import time; time.sleep(2)", "print('chapter')")
    verdict = _write(d / "13_verdict.ipynb",
                     "import json; nb = json.load(open('03_chapter.ipynb'))",
                     "print(''.join(nb['cells'][1]['outputs'][0]['text']))")
    runs = notebooks.execute([verdict, ch], into="inplace", workers=2, cache_dir=None, log=lambda m: None)
    assert all(r.ok for r in runs), [r.error for r in runs]
    out = nbformat.read(verdict, as_version=4).cells[1].outputs[0]["text"]
    assert out.strip() == "chapter"
