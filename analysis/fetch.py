"""Fetch upstream files into the raw cache: cache, then mirror, then download; always verified.

For each manifest file, in this order:

1. the cache (``data/raw/``, or ``$THIRD_PILLAR_CACHE``): used only if its size and SHA-256 match
   the manifest, re-checked on every call (38 MB in all, so this is cheap);
2. the offline mirror (``$THIRD_PILLAR_MIRROR``, default ``../shared/data/mirror`` when it
   exists), laid out like the canonical URL: ``<owner>/<repo>/<commit>/<path>``;
3. a download from the canonical URL (pooch's ``HTTPDownloader``, with a timeout).

A copy enters the cache only one way: it is written to a temporary file in the cache
directory, its size and SHA-256 are checked, and only then is it moved into place with
``os.replace`` (atomic within one file system). So the cache never holds a partial or unverified
file. A per-file lock (``filelock``, lock files in ``<cache>/.locks/``) stops two processes
fetching the same file at once; whoever waits finds the other's verified copy.

Errors: :class:`DataIntegrityError` when a source yields the wrong bytes; :class:`DataUnavailableError`
when no source can provide a file (e.g. offline without a mirror), listing each file's URL and
the exact path where a hand-made copy should go.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import filelock
import pooch
import requests

from analysis.manifest import RAW_PREFIX, ManifestEntry, load_manifest
from analysis.paths import MANIFEST_PATH, RAW_DIR, default_mirror

log = logging.getLogger(__name__)

#: Seconds to wait for a server to accept the connection or to send the next bytes (a per-read
#: limit passed to ``requests``, not a cap on the whole transfer).
TIMEOUT_S = 30.0
#: Seconds to wait for another process that is fetching the same file before giving up.
LOCK_TIMEOUT_S = 600.0
#: Bytes read per chunk when hashing and downloading.
CHUNK_BYTES = 1 << 20
LOCK_DIRNAME = ".locks"
PART_SUFFIX = ".part"
MIRROR_ENV = "THIRD_PILLAR_MIRROR"

Status = str  # one of "ok", "missing", "corrupt"


class DataIntegrityError(RuntimeError):
    """A copy of a file does not match the manifest's SHA-256 (or size); it was not cached.

    Attributes: ``name`` (short name), ``source`` (mirror path or URL the bytes came from),
    ``expected_sha256``/``actual_sha256`` (hex), ``expected_size``/``actual_size`` (bytes).
    """

    def __init__(
        self,
        entry: ManifestEntry,
        source: str,
        actual_sha256: str,
        actual_size: int,
        hint: str = "",
    ) -> None:
        self.name = entry.name
        self.source = source
        self.expected_sha256 = entry.sha256
        self.actual_sha256 = actual_sha256
        self.expected_size = entry.size
        self.actual_size = actual_size
        size_note = ""
        if actual_size != entry.size:
            size_note = (
                f"\n  size:     expected {entry.size:,} bytes, got {actual_size:,} bytes"
                f" ({'truncated, or ' if actual_size < entry.size else ''}a different file)"
            )
        super().__init__(
            f"{entry.name}: the copy from {source} does not match the manifest; it was not cached."
            f"\n  url:      {entry.url}"
            f"\n  expected: sha256 {entry.sha256}"
            f"\n  actual:   sha256 {actual_sha256}"
            f"{size_note}" + (f"\n{hint}" if hint else "")
        )


@dataclass(frozen=True)
class MissingFile:
    """One file that could not be obtained: where it comes from, where a copy must go, and why."""

    name: str
    url: str
    target: Path
    sha256: str
    size: int
    mirror_path: Path | None
    reasons: tuple[str, ...] = field(default=())


class DataUnavailableError(FileNotFoundError):
    """Some manifest files are in neither the cache nor the mirror and could not be downloaded.

    ``missing`` lists each file (:class:`MissingFile`); the message says, for each, the URL to
    download and the exact path where a hand-made copy should be saved.
    """

    def __init__(self, missing: list[MissingFile], mirror_note: str) -> None:
        self.missing = missing
        lines = [
            f"{len(missing)} data file{'s' if len(missing) != 1 else ''} could not be obtained"
            " (no verified copy in the cache or the mirror, and the download failed).",
            f"Mirror: {mirror_note}",
            "To fix, either download each URL below on a machine with internet and save it under"
            " exactly the path shown (it is checked against the SHA-256), or set"
            f" {MIRROR_ENV} to a directory laid out as <owner>/<repo>/<commit>/<path> that holds"
            " the files; then run `python -m analysis data` again.",
        ]
        for m in missing:
            lines += [
                "",
                f"  {m.name}",
                f"    url:     {m.url}",
                f"    save as: {m.target}",
                f"    sha256:  {m.sha256}  ({m.size:,} bytes)",
            ]
            if m.mirror_path is not None:
                lines.append(f"    or put in the mirror as: {m.mirror_path}")
            lines += [f"    why:     {r}" for r in m.reasons]
        super().__init__("\n".join(lines))


def sha256sum(path: Path | str) -> str:
    """SHA-256 of the file at ``path``, as 64 lower-case hex digits."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK_BYTES), b""):
            h.update(chunk)
    return h.hexdigest()


def _entries(entries: Mapping[str, ManifestEntry] | None) -> Mapping[str, ManifestEntry]:
    # Tests pass their own synthetic entries; everyone else reads data/manifest.yml.
    return load_manifest() if entries is None else entries


def _lookup(name: str, entries: Mapping[str, ManifestEntry]) -> ManifestEntry:
    if name not in entries:
        raise KeyError(f"{name!r} is not in the manifest ({MANIFEST_PATH}); known: {', '.join(entries)}")
    return entries[name]


def cached_path(
    name: str,
    cache_dir: Path | str | None = None,
    *,
    entries: Mapping[str, ManifestEntry] | None = None,
) -> Path:
    """Where file ``name`` lives in the cache (``<cache_dir>/<name><ext>``); it may not exist yet."""
    return Path(cache_dir or RAW_DIR) / _lookup(name, _entries(entries)).filename


def _status(path: Path, entry: ManifestEntry) -> Status:
    """``ok``, ``missing`` or ``corrupt`` for a cached copy; a wrong size is rejected before hashing."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "missing"
    if size != entry.size:
        return "corrupt"
    return "ok" if sha256sum(path) == entry.sha256 else "corrupt"


def check_cache(
    names: Iterable[str] | None = None,
    cache_dir: Path | str | None = None,
    *,
    entries: Mapping[str, ManifestEntry] | None = None,
) -> list[tuple[str, Status]]:
    """``(name, status)`` for each file (all manifest files by default), status ``ok``/``missing``/``corrupt``.

    Only reads the cache: nothing is fetched, moved or deleted.
    """
    entries = _entries(entries)
    cache_dir = Path(cache_dir or RAW_DIR)
    selected = [_lookup(n, entries) for n in (entries if names is None else names)]
    return [(e.name, _status(cache_dir / e.filename, e)) for e in selected]


def _mirror_note(mirror: Path | None) -> str:
    if mirror is None:
        if os.environ.get(MIRROR_ENV) == "":
            return f"none ({MIRROR_ENV} is set empty, which disables the mirror)"
        return f"none ({MIRROR_ENV} is not set and ../shared/data/mirror does not exist)"
    if not mirror.is_dir():
        return f"{mirror} (does not exist)"
    return str(mirror)


def _mirror_relpath(entry: ManifestEntry) -> Path | None:
    # Only raw.githubusercontent.com URLs have a place in the mirror; other URLs go straight to download.
    return entry.mirror_relpath if entry.url.startswith(RAW_PREFIX) else None


def _install(entry: ManifestEntry, target: Path, write: Callable[[Path], None], source: str, hint: str) -> None:
    """Write a copy with ``write(tmp)`` to a temp file beside ``target``, verify it, move it into place.

    On any failure (wrong hash or size, network error, interrupt) the temp file is removed, so the
    cache is left exactly as it was.
    """
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=PART_SUFFIX)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        size, digest = tmp.stat().st_size, sha256sum(tmp)
        if size != entry.size or digest != entry.sha256:
            raise DataIntegrityError(entry, source, digest, size, hint)
        # Raw data are read-only once verified. No fsync: every later use re-verifies the hash,
        # so a copy damaged by a crash is detected and replaced, never trusted.
        os.chmod(tmp, 0o444)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _download(url: str, out: Path, timeout: float) -> None:
    """Stream ``url`` into ``out`` with pooch's HTTP downloader; raises ``requests`` errors."""
    downloader = pooch.HTTPDownloader(progressbar=False, chunk_size=CHUNK_BYTES, timeout=timeout)
    downloader(url, str(out), None)


def _describe_request_error(exc: requests.RequestException, timeout: float) -> str:
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"download failed: HTTP {exc.response.status_code} {exc.response.reason}"
    if isinstance(exc, requests.Timeout):
        return f"download failed: no response within {timeout:g} s (network unreachable or server down)"
    if isinstance(exc, requests.ConnectionError):
        # requests wraps urllib3's MaxRetryError; its .reason is the useful part (DNS failure, refused).
        cause = getattr(exc.args[0], "reason", None) if exc.args else None
        detail = f"{type(cause).__name__}: {str(cause).split('): ')[-1]}" if cause else _first_line(exc)
        return f"download failed: cannot connect (offline?): {detail}"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return f"download interrupted: the connection dropped before the whole file arrived ({_first_line(exc)})"
    return f"download failed: {type(exc).__name__}: {_first_line(exc)}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _obtain(
    entry: ManifestEntry,
    cache_dir: Path,
    mirror: Path | None,
    timeout: float,
    unreachable_hosts: set[str],
) -> Path:
    """The verified cached copy of ``entry``, fetching it if needed (see the module docstring)."""
    target = cache_dir / entry.filename
    # Fast path without locking: os.replace is atomic, so a reader never sees a partial file.
    if _status(target, entry) == "ok":
        return target

    lock_dir = cache_dir / LOCK_DIRNAME
    lock_dir.mkdir(parents=True, exist_ok=True)
    relpath = _mirror_relpath(entry)
    reasons: list[str] = []
    try:
        with filelock.FileLock(lock_dir / f"{entry.filename}.lock", timeout=LOCK_TIMEOUT_S):
            status = _status(target, entry)
            if status == "ok":  # another process fetched it while we waited for the lock
                return target
            if status == "corrupt":
                reasons.append(f"cache: {target} exists but does not match the manifest (ignored)")
                log.warning("%s: cached copy %s does not match the manifest; fetching again", entry.name, target)
            # Holding the lock, no one else can be writing this file's temp files: any left are
            # from a killed process.
            for stale in cache_dir.glob(f".{entry.filename}.*{PART_SUFFIX}"):
                stale.unlink(missing_ok=True)

            if mirror is None or not mirror.is_dir():
                pass  # no mirror at all: the error's header says so once, not once per file
            elif relpath is None:
                reasons.append("mirror: no mirror path (the URL is not on raw.githubusercontent.com)")
            elif not (mirror / relpath).is_file():
                reasons.append(f"mirror: not found at {mirror / relpath}")
            else:
                src = mirror / relpath
                hint = (
                    f"The mirror copy is damaged or from another commit: replace it, or set {MIRROR_ENV}="
                    " (empty) to skip the mirror and download instead."
                )
                size = src.stat().st_size
                if size != entry.size:  # reject early, before copying anything into the cache
                    raise DataIntegrityError(entry, f"mirror {src}", sha256sum(src), size, hint)
                _install(entry, target, lambda tmp: shutil.copyfile(src, tmp), f"mirror {src}", hint)
                log.info("%s: copied from mirror %s", entry.name, src)
                return target

            host = urlsplit(entry.url).netloc
            if host in unreachable_hosts:
                # Offline, one failed connection is enough: don't wait out a timeout per file.
                reasons.append(f"download: not tried, {host} was unreachable earlier in this run")
            else:
                hint = (
                    "Run again in case the transfer was damaged. If it persists, the upstream file has"
                    " changed: review the new file before updating the manifest (never edit a hash by hand)."
                )
                try:
                    _install(entry, target, lambda tmp: _download(entry.url, tmp, timeout), entry.url, hint)
                except requests.RequestException as exc:
                    reasons.append(_describe_request_error(exc, timeout))
                    if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
                        unreachable_hosts.add(host)
                else:
                    log.info("%s: downloaded from %s", entry.name, entry.url)
                    return target
    except filelock.Timeout:
        reasons.append(
            f"lock: another process held {lock_dir / (entry.filename + '.lock')} for {LOCK_TIMEOUT_S:g} s;"
            " if no other fetch is running, delete that lock file"
        )

    raise DataUnavailableError(
        [
            MissingFile(
                name=entry.name,
                url=entry.url,
                target=target,
                sha256=entry.sha256,
                size=entry.size,
                mirror_path=(mirror / relpath) if (mirror is not None and relpath is not None) else None,
                reasons=tuple(reasons),
            )
        ],
        _mirror_note(mirror),
    )


def _resolve_mirror(mirror: Path | str | None) -> Path | None:
    return Path(mirror) if mirror else default_mirror()


def fetch(
    name: str,
    cache_dir: Path | str | None = None,
    mirror: Path | str | None = None,
    *,
    entries: Mapping[str, ManifestEntry] | None = None,
    timeout: float = TIMEOUT_S,
) -> Path:
    """Path to the verified cached copy of manifest file ``name``: from the cache, mirror or URL.

    ``cache_dir`` defaults to ``analysis.paths.RAW_DIR``; ``mirror`` to ``analysis.paths.default_mirror()``;
    ``entries`` to the project manifest; ``timeout`` is in seconds per network read.

    Raises :class:`DataIntegrityError` if a source gives bytes that do not match the manifest and
    :class:`DataUnavailableError` if no source can provide the file.
    """
    entry = _lookup(name, _entries(entries))
    return _obtain(entry, Path(cache_dir or RAW_DIR), _resolve_mirror(mirror), timeout, set())


def fetch_all(
    names: Iterable[str] | None = None,
    cache_dir: Path | str | None = None,
    mirror: Path | str | None = None,
    *,
    entries: Mapping[str, ManifestEntry] | None = None,
    timeout: float = TIMEOUT_S,
) -> dict[str, Path]:
    """Fetch every file in ``names`` (default: the whole manifest); ``{name: verified cached path}``.

    Every file is attempted before anything is raised. If some could not be obtained, one
    :class:`DataUnavailableError` lists them all (URL, path for a hand-made copy, reason); files
    whose only available copy failed verification are listed there too, with the hash mismatch.
    """
    entries = _entries(entries)
    selected = [_lookup(n, entries) for n in (entries if names is None else names)]
    cache_dir = Path(cache_dir or RAW_DIR)
    mirror_dir = _resolve_mirror(mirror)
    unreachable: set[str] = set()  # shared across files so an offline run fails fast
    paths: dict[str, Path] = {}
    missing: list[MissingFile] = []
    for e in selected:
        try:
            paths[e.name] = _obtain(e, cache_dir, mirror_dir, timeout, unreachable)
        except DataUnavailableError as exc:
            missing.extend(exc.missing)
        except DataIntegrityError as exc:
            relpath = _mirror_relpath(e)
            missing.append(
                MissingFile(
                    name=e.name,
                    url=e.url,
                    target=cache_dir / e.filename,
                    sha256=e.sha256,
                    size=e.size,
                    mirror_path=(mirror_dir / relpath) if (mirror_dir and relpath) else None,
                    reasons=(
                        f"rejected the copy from {exc.source}: sha256 {exc.actual_sha256}"
                        f" ({exc.actual_size:,} bytes) does not match the manifest",
                    ),
                )
            )
    if missing:
        raise DataUnavailableError(missing, _mirror_note(mirror_dir))
    return paths
