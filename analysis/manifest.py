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


class ManifestError(ValueError):
    """The manifest cannot be used as written; the message is one line naming the file, entry and field."""


#: The YAML type each field must have. ``size`` is a byte count: an integer, never a quoted string
#: (a string would be compared with the file's size as text and formatted as a number, and fail).
FIELD_TYPES = {"name": str, "url": str, "sha256": str, "size": int, "licence": str, "citation": str,
               "description": str}


def _type_name(value: object) -> str:
    # YAML's words, which the person editing the manifest sees, rather than Python's.
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a mapping", type(None): "empty"}.get(type(value), type(value).__name__)


def _check_entry(path: Path, i: int, item: object) -> None:
    """Raise :class:`ManifestError` unless ``item`` has every field, each of the right type."""
    if not isinstance(item, dict):
        raise ManifestError(f"{path}: entry {i} is {_type_name(item)}, not a mapping of fields: write it as"
                            f" `- name: ...` followed by the fields {', '.join(REQUIRED_FIELDS)}")
    label = f"entry {i} ({item['name']})" if isinstance(item.get("name"), str) else f"entry {i}"
    missing = [f for f in REQUIRED_FIELDS if f not in item]
    if missing:
        raise ManifestError(f"{path}: {label} lacks {missing}: add the missing field(s)")
    for field_name, kind in FIELD_TYPES.items():
        value = item[field_name]
        # bool is a subclass of int in Python, but `size: true` is no byte count.
        ok = isinstance(value, kind) and not isinstance(value, bool)
        if kind is int and ok and value <= 0:
            raise ManifestError(f"{path}: {label}: field 'size' must be a positive number of bytes, got {value}")
        if kind is str and ok and not value.strip():
            raise ManifestError(f"{path}: {label}: field {field_name!r} is empty: fill it in")
        if not ok:
            example = value if isinstance(value, str) and value.strip().isdigit() else 1643007
            fix = f"write the byte count unquoted, e.g. `size: {example}`" if kind is int else "write it as quoted text"
            raise ManifestError(
                f"{path}: {label}: field {field_name!r} must be {'an integer' if kind is int else 'a string'},"
                f" got {_type_name(value)} {value!r}: {fix}"
            )


def load_manifest(path: Path = MANIFEST_PATH) -> dict[str, ManifestEntry]:
    """Read and check the manifest; entries keyed by short name, in file order.

    Raises :class:`ManifestError` (one line: file, entry, field, what to do) for invalid YAML, a
    missing field, a field of the wrong type (e.g. a quoted ``size``), a bad SHA-256 or a duplicate name.
    """
    with open(path, encoding="utf-8") as fh:
        try:
            raw = yaml.safe_load(fh)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or type(exc).__name__
            raise ManifestError(f"{path}: not valid YAML ({problem}{where}): fix the syntax there") from None
        except UnicodeDecodeError as exc:
            raise ManifestError(f"{path}: not UTF-8 text ({exc.reason}): save it as UTF-8") from None
    files = raw.get("files") if isinstance(raw, dict) else None
    if not isinstance(files, list):
        raise ManifestError(f"{path}: expected a top-level `files:` list of entries")
    entries: dict[str, ManifestEntry] = {}
    for i, item in enumerate(files):
        _check_entry(path, i, item)
        if item["name"] in entries:
            raise ManifestError(f"{path}: duplicate name {item['name']!r}: give each entry its own name")
        sha = item["sha256"].lower()
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise ManifestError(f"{path}: {item['name']}: field 'sha256' is not 64 hex digits")
        entries[item["name"]] = ManifestEntry(**{**{k: item[k] for k in REQUIRED_FIELDS}, "sha256": sha})
    return entries


def entry(name: str) -> ManifestEntry:
    """The manifest entry called ``name``; a clear error lists the known names otherwise."""
    entries = load_manifest()
    if name not in entries:
        raise KeyError(f"{name!r} is not in {MANIFEST_PATH}; known: {', '.join(entries)}")
    return entries[name]
