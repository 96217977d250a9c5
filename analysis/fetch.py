"""Fetch upstream files into the raw cache: cache, then mirror, then download; always verified.

Preliminary version: cache + mirror with SHA-256 verification and atomic moves. (Download via
pooch, locking and the full error reporting are being added.)
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from analysis.manifest import ManifestEntry, load_manifest
from analysis.paths import RAW_DIR, default_mirror


class DataIntegrityError(RuntimeError):
    """A file's SHA-256 does not match the manifest."""


def sha256sum(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(name: str, cache_dir: Path | None = None, mirror: Path | None = None) -> Path:
    """Path to the verified cached copy of manifest file ``name``."""
    e: ManifestEntry = load_manifest()[name]
    cache_dir = Path(cache_dir or RAW_DIR)
    target = cache_dir / e.filename
    if target.exists() and sha256sum(target) == e.sha256:
        return target
    mirror = mirror or default_mirror()
    src = mirror / e.mirror_relpath if mirror else None
    if src is None or not src.exists():
        raise FileNotFoundError(f"{name}: not cached and not in mirror; get {e.url} and save it as {target}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=f".{e.filename}.", suffix=".part")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        actual = sha256sum(Path(tmp))
        if actual != e.sha256:
            raise DataIntegrityError(f"{name}: expected sha256 {e.sha256}, got {actual}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return target
