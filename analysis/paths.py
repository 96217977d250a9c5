"""Where things live. Every path the package uses is derived from the repository root."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / "data"
MANIFEST_PATH = DATA_DIR / "manifest.yml"
CODEBOOK_PATH = DATA_DIR / "codebook.yml"
CROSSWALK_DIR = DATA_DIR / "crosswalks"
# Raw upstream files (read-only once verified) and derived panels; both git-ignored.
RAW_DIR = Path(os.environ.get("THIRD_PILLAR_CACHE", DATA_DIR / "raw"))
PROCESSED_DIR = Path(os.environ.get("THIRD_PILLAR_PROCESSED", DATA_DIR / "processed"))
BOOK_DIR = ROOT / "book"


def default_mirror() -> Path | None:
    """The offline mirror: ``$THIRD_PILLAR_MIRROR``, else ``../shared/data/mirror`` if it exists.

    An empty ``THIRD_PILLAR_MIRROR`` disables the mirror (used by the offline tests).
    """
    env = os.environ.get("THIRD_PILLAR_MIRROR")
    if env is not None:
        return Path(env) if env else None
    candidate = ROOT.parent / "shared" / "data" / "mirror"
    return candidate if candidate.is_dir() else None
