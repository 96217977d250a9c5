"""Execute chapter notebooks in place, top to bottom, in a fresh kernel.

Committed notebooks carry the outputs of such a run: nbval compares the marked cells against them,
and the book shows them. ``make notebooks`` runs this before a chapter is committed.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from analysis.paths import BOOK_DIR


def execute_in_place(path: Path, timeout: int = 1200) -> None:
    """Run ``path`` in a fresh ``python3`` kernel from its own directory and save the outputs.

    The file is replaced atomically, so an error leaves the committed version untouched.
    """
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
        record_timing=False,  # timings differ run to run and would churn the diff
    )
    client.execute()
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".ipynb.part")
    os.close(fd)
    try:
        nbformat.write(nb, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def chapter_notebooks(book_dir: Path = BOOK_DIR) -> list[Path]:
    return sorted(p for p in Path(book_dir).glob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def execute_all(paths: list[Path] | None = None) -> None:
    for p in paths or chapter_notebooks():
        print(f"executing {p.relative_to(p.parent.parent)}", flush=True)
        execute_in_place(p)
