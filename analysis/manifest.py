"""The data manifest: one entry per upstream file, pinned by canonical URL and SHA-256."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import yaml

from analysis.paths import MANIFEST_PATH

RAW_PREFIX = "https://raw.githubusercontent.com/"
REQUIRED_FIELDS = ("name", "url", "sha256", "size", "licence", "citation", "description")


@dataclass(frozen=True)
class ManifestEntry:
    """One pinned upstream file."""

    name: str
    url: str
    sha256: str
    size: int
    licence: str
    citation: str
    description: str

    @property
    def mirror_relpath(self) -> Path:
        """``<owner>/<repo>/<commit>/<path>``: where the file sits in a mirror (URL-decoded)."""
        if not self.url.startswith(RAW_PREFIX):
            raise ValueError(f"{self.name}: URL is not a raw.githubusercontent.com URL: {self.url}")
        return Path(unquote(urlsplit(self.url).path.lstrip("/")))

    @property
    def filename(self) -> str:
        """Cache file name: the short name plus the upstream extension (``laus.zip`` -> ``.zip``)."""
        suffix = "".join(Path(unquote(self.url)).suffixes[-1:])
        return f"{self.name}{suffix}"


def load_manifest(path: Path = MANIFEST_PATH) -> dict[str, ManifestEntry]:
    """Read and check the manifest; entries keyed by short name, in file order."""
    with open(path, encoding="utf-8") as fh:
        raw = yaml.safe_load(fh)
    entries: dict[str, ManifestEntry] = {}
    for i, item in enumerate(raw.get("files", [])):
        missing = [f for f in REQUIRED_FIELDS if f not in item]
        if missing:
            raise ValueError(f"{path}: entry {i} ({item.get('name', '?')}) lacks {missing}")
        if item["name"] in entries:
            raise ValueError(f"{path}: duplicate name {item['name']!r}")
        sha = str(item["sha256"]).lower()
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise ValueError(f"{path}: {item['name']}: sha256 is not 64 hex digits")
        entries[item["name"]] = ManifestEntry(**{**{k: item[k] for k in REQUIRED_FIELDS}, "sha256": sha})
    return entries


def entry(name: str) -> ManifestEntry:
    """The manifest entry called ``name``; a clear error lists the known names otherwise."""
    entries = load_manifest()
    if name not in entries:
        raise KeyError(f"{name!r} is not in {MANIFEST_PATH}; known: {', '.join(entries)}")
    return entries[name]
