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

Errors: :class:`DataIntegrityError` when a source yields the wrong bytes (its subclass
:class:`ManifestMismatchError` when the cached copy and a fresh copy agree with each other but not
with the manifest, so the manifest entry is the likely culprit); :class:`DataUnavailableError` when
no source can provide a file (e.g. offline without a mirror), listing each file's URL and the exact
path where a hand-made copy should go; :class:`DataAccessError` (an ``OSError``) when the operating
system refuses a read or write (read-only directory, disk full, file-size limit), one line per file.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import filelock
import pooch
import requests

from analysis import paths
from analysis.manifest import RAW_PREFIX, ManifestEntry, load_manifest
from analysis.paths import MANIFEST_PATH, default_mirror

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
        message: str | None = None,
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
        #: Sources tried for this file before the error ("mirror", "download"); set by ``_obtain``.
        self.tried: tuple[str, ...] = ()
        super().__init__(
            message
            or f"{entry.name}: the copy from {source} does not match the manifest; it was not cached."
            f"\n  url:      {entry.url}"
            f"\n  expected: sha256 {entry.sha256}"
            f"\n  actual:   sha256 {actual_sha256}"
            f"{size_note}" + (f"\n{hint}" if hint else "")
        )


class ManifestMismatchError(DataIntegrityError):
    """The cached copy and a fresh copy (mirror or download) are byte-identical but not what the manifest pins.

    Two independent copies agree, so the manifest entry (a mistyped ``sha256`` or ``size``) is far
    more likely wrong than both copies. Nothing is replaced. Extra attribute: ``cached`` (path).
    """

    def __init__(self, entry: ManifestEntry, cached: Path, source: str, actual_sha256: str, actual_size: int) -> None:
        self.cached = cached
        sizes = f"{entry.size:,} bytes" + ("" if actual_size == entry.size else f" vs {actual_size:,} bytes")
        super().__init__(
            entry,
            source,
            actual_sha256,
            actual_size,
            message=(
                f"{entry.name}: the manifest and the file disagree: the manifest pins sha256 {entry.sha256},"
                f" but the cached copy {cached} and the copy from {source} are identical with sha256"
                f" {actual_sha256} ({sizes}); check this entry's sha256 and size in the manifest against"
                " the upstream file (the copies were left as they are)"
            ),
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
    #: Sources actually tried after the cache: "mirror" and/or "download" (the header says which).
    tried: tuple[str, ...] = field(default=())


def _unavailable_header(missing: list[MissingFile]) -> str:
    """First line of :class:`DataUnavailableError`: how many files, and which sources were really tried."""
    looked = "the cache or the mirror" if any("mirror" in m.tried for m in missing) else "the cache"
    downloaded = [("download" in m.tried) for m in missing]
    if all(downloaded):
        tail = "and the download failed"
    elif not any(downloaded):
        tail = "and no download was tried"
    else:
        tail = "and the download failed or was not tried"
    n = len(missing)
    return f"{n} data file{'s' if n != 1 else ''} could not be obtained (no verified copy in {looked}, {tail})."


@dataclass(frozen=True)
class AccessFailure:
    """One file the operating system would not let us read or write, and what to do, as one line."""

    name: str
    path: Path
    error: OSError
    line: str


class DataAccessError(OSError):
    """Reading or writing some files failed at the operating-system level (read-only, disk full, size limit).

    ``failures`` lists each (:class:`AccessFailure`); ``str()`` is one line per file, naming the path
    and what to do. ``errno`` is the first failure's.
    """

    def __init__(self, failures: Iterable[AccessFailure]) -> None:
        self.failures = list(failures)
        super().__init__(self.failures[0].error.errno if self.failures else None, "\n".join(self.lines))

    @property
    def lines(self) -> list[str]:
        return [f.line for f in self.failures]

    def __str__(self) -> str:
        return "\n".join(self.lines)


#: Errors that only a write can cause; whatever file name the OS attached, the write target is at fault
#: (``shutil.copyfile`` names the *source* file in an ENOSPC error).
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


def describe_os_error(exc: OSError, path: Path, elsewhere: str) -> str:
    """``cannot <write|access> <path>: <reason>; <what to do>`` in one line; ``elsewhere`` is the way
    around it (e.g. "or pass --cache-dir DIR to use another directory")."""
    code = exc.errno
    reason = os.strerror(code) if code else _first_line(exc)
    if code in (errno.ENOSPC, errno.EDQUOT):
        todo = f"free disk space (or quota) on the file system holding {path.parent}, {elsewhere}"
    elif code == errno.EFBIG:
        todo = f"the file exceeds the file-size limit: raise it (`ulimit -f unlimited`), {elsewhere}"
    elif code == errno.EROFS:
        todo = f"{path.parent} is on a read-only file system: {elsewhere.removeprefix('or ')}"
    elif code == errno.ENOENT:
        todo = "it does not exist: check the path"
    elif code in (errno.EACCES, errno.EPERM):
        todo = f"give this user write access to {path.parent} (and read access to {path.name}), {elsewhere}"
    else:
        todo = f"check the disk and the permissions of {path.parent}, then run again"
    return f"cannot {'write' if code in _WRITE_ERRNOS else 'access'} {path}: {reason}; {todo}"


class DataUnavailableError(FileNotFoundError):
    """Some manifest files are in neither the cache nor the mirror and could not be downloaded.

    ``missing`` lists each file (:class:`MissingFile`); the message says, for each, the URL to
    download and the exact path where a hand-made copy should be saved.
    """

    def __init__(self, missing: list[MissingFile], mirror_note: str, unusable: Iterable[AccessFailure] = ()) -> None:
        self.missing = missing
        #: Other files that failed at the OS level in the same run (see :class:`DataAccessError`).
        self.unusable = list(unusable)
        lines = [
            _unavailable_header(missing),
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
        if self.unusable:
            lines += ["", "Also could not be read or written:"] + [f"  {f.line}" for f in self.unusable]
        super().__init__("\n".join(lines))


def sha256sum(path: Path | str) -> str:
    """SHA-256 of the file at ``path``, as 64 lower-case hex digits."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK_BYTES), b""):
            h.update(chunk)
    return h.hexdigest()


def _cache_dir(cache_dir: Path | str | None) -> Path:
    # Read paths.RAW_DIR at call time (not import time) so that using_cache_dir() reaches every reader.
    return Path(cache_dir or paths.RAW_DIR)


@contextmanager
def using_cache_dir(cache_dir: Path | str | None) -> Iterator[Path]:
    """Within the block, the default raw cache (``paths.RAW_DIR``) is ``cache_dir``, for every caller of
    :func:`fetch` that does not name one (the panel builders' ``read_raw``); restored afterwards.
    ``None`` leaves the default as it is."""
    old = paths.RAW_DIR
    paths.RAW_DIR = _cache_dir(cache_dir)
    try:
        yield paths.RAW_DIR
    finally:
        paths.RAW_DIR = old


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
    return _cache_dir(cache_dir) / _lookup(name, _entries(entries)).filename


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
    cache_dir = _cache_dir(cache_dir)
    selected = [_lookup(n, entries) for n in (entries if names is None else names)]
    return [(e.name, _status(cache_dir / e.filename, e)) for e in selected]


def _mirror_note(mirror: Path | None) -> str:
    if mirror is None:
        if os.environ.get(MIRROR_ENV) == "":
            return f"none ({MIRROR_ENV} is set empty, which disables the mirror)"
        return f"none ({MIRROR_ENV} is not set and ../shared/data/mirror does not exist)"
    if mirror.is_dir():
        return str(mirror)
    if mirror.exists():
        return f"{mirror} (is not a directory: point {MIRROR_ENV} or --mirror at the mirror's top folder)"
    return f"{mirror} (does not exist)"


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


def _agrees_with_cache(target: Path, exc: DataIntegrityError) -> bool:
    """Whether the rejected copy is byte-identical to the (also rejected) cached copy at ``target``."""
    try:
        return target.stat().st_size == exc.actual_size and sha256sum(target) == exc.actual_sha256
    except FileNotFoundError:
        return False


def _install_checked(entry: ManifestEntry, target: Path, cache_corrupt: bool, install: Callable[[], None]) -> None:
    """Run ``install()``; if it rejects a copy that equals the rejected cached copy, blame the manifest.

    The cached copy was verified when it entered the cache, so two equal copies that both fail the
    manifest mean the manifest changed (or was mistyped), not that both copies are damaged.
    """
    try:
        install()
    except DataIntegrityError as exc:
        if cache_corrupt and _agrees_with_cache(target, exc):
            raise ManifestMismatchError(entry, target, exc.source, exc.actual_sha256, exc.actual_size) from None
        raise


def _obtain_copy(
    entry: ManifestEntry,
    target: Path,
    mirror: Path | None,
    timeout: float,
    unreachable_hosts: set[str],
    download: bool,
    tried: list[str],
) -> Path:
    """The body of :func:`_obtain`; appends each source it really tries ("mirror", "download") to ``tried``."""
    cache_dir = target.parent
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
                tried.append("mirror")
                reasons.append(f"mirror: not found at {mirror / relpath}")
            else:
                tried.append("mirror")
                src = mirror / relpath
                hint = (
                    f"The mirror copy is damaged or from another commit: replace it, or set {MIRROR_ENV}="
                    " (empty) to skip the mirror and download instead."
                )

                def from_mirror() -> None:
                    size = src.stat().st_size
                    if size != entry.size:  # reject early, before copying anything into the cache
                        raise DataIntegrityError(entry, f"mirror {src}", sha256sum(src), size, hint)
                    _install(entry, target, lambda tmp: shutil.copyfile(src, tmp), f"mirror {src}", hint)

                _install_checked(entry, target, status == "corrupt", from_mirror)
                log.info("%s: copied from mirror %s", entry.name, src)
                return target

            host = urlsplit(entry.url).netloc
            if not download:
                reasons.append("download: not tried (downloads are switched off)")
            elif host in unreachable_hosts:
                # Offline, one failed connection is enough: don't wait out a timeout per file.
                reasons.append(f"download: not tried, {host} was unreachable earlier in this run")
            else:
                tried.append("download")
                hint = (
                    "Run again in case the transfer was damaged. If it persists, the upstream file has"
                    " changed: review the new file before updating the manifest (never edit a hash by hand)."
                )

                def from_url() -> None:
                    _install(entry, target, lambda tmp: _download(entry.url, tmp, timeout), entry.url, hint)

                try:
                    _install_checked(entry, target, status == "corrupt", from_url)
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
                tried=tuple(tried),
            )
        ],
        _mirror_note(mirror),
    )


def _access_failure(entry: ManifestEntry, exc: OSError, target: Path, mirror: Path | None) -> AccessFailure:
    """Which path an ``OSError`` met while obtaining ``entry`` is about, and the one-line advice."""
    name = Path(exc.filename) if isinstance(exc.filename, (str, os.PathLike)) else None
    # A temp file's name means nothing to the user: report the file it was to become.
    if exc.errno in _WRITE_ERRNOS or name is None or name.name.endswith(PART_SUFFIX):
        path = target
    else:
        path = name
    in_mirror = mirror is not None and (mirror == path or mirror in path.parents)
    if in_mirror:
        elsewhere = f"or set {MIRROR_ENV}= (empty) to download instead"
    else:
        elsewhere = "or pass --cache-dir DIR to use another directory"
    return AccessFailure(entry.name, path, exc, f"{entry.name}: {describe_os_error(exc, path, elsewhere)}")


def _obtain(
    entry: ManifestEntry,
    cache_dir: Path,
    mirror: Path | None,
    timeout: float,
    unreachable_hosts: set[str],
    download: bool = True,
) -> Path:
    """The verified cached copy of ``entry``, fetching it if needed (see the module docstring).

    An ``OSError`` from the file system (not the network) becomes a one-file :class:`DataAccessError`.
    """
    target = cache_dir / entry.filename
    tried: list[str] = []
    try:
        return _obtain_copy(entry, target, mirror, timeout, unreachable_hosts, download, tried)
    except DataIntegrityError as exc:
        exc.tried = tuple(tried)
        raise
    except (DataUnavailableError, DataAccessError):  # both are OSErrors, already explained
        raise
    except OSError as exc:
        raise DataAccessError([_access_failure(entry, exc, target, mirror)]) from exc


def _resolve_mirror(mirror: Path | str | None) -> Path | None:
    return Path(mirror) if mirror else default_mirror()


def fetch(
    name: str,
    cache_dir: Path | str | None = None,
    mirror: Path | str | None = None,
    *,
    entries: Mapping[str, ManifestEntry] | None = None,
    timeout: float = TIMEOUT_S,
    download: bool = True,
) -> Path:
    """Path to the verified cached copy of manifest file ``name``: from the cache, mirror or URL.

    ``cache_dir`` defaults to ``analysis.paths.RAW_DIR`` (read at call time, see :func:`using_cache_dir`);
    ``mirror`` to ``analysis.paths.default_mirror()``; ``entries`` to the project manifest; ``timeout``
    is in seconds per network read; ``download=False`` never goes to the network.

    Raises :class:`DataIntegrityError` if a source gives bytes that do not match the manifest,
    :class:`DataUnavailableError` if no source can provide the file and :class:`DataAccessError` if
    the file system refuses a read or write.
    """
    entry = _lookup(name, _entries(entries))
    return _obtain(entry, _cache_dir(cache_dir), _resolve_mirror(mirror), timeout, set(), download)


def _rejected(e: ManifestEntry, exc: DataIntegrityError, cache_dir: Path, mirror_dir: Path | None) -> MissingFile:
    """A file whose only copy failed verification, as an entry of :class:`DataUnavailableError`."""
    relpath = _mirror_relpath(e)
    if isinstance(exc, ManifestMismatchError):
        reason = str(exc).removeprefix(f"{e.name}: ")
    else:
        reason = (
            f"rejected the copy from {exc.source}: sha256 {exc.actual_sha256}"
            f" ({exc.actual_size:,} bytes) does not match the manifest"
        )
    return MissingFile(
        name=e.name,
        url=e.url,
        target=cache_dir / e.filename,
        sha256=e.sha256,
        size=e.size,
        mirror_path=(mirror_dir / relpath) if (mirror_dir and relpath) else None,
        reasons=(reason,),
        tried=exc.tried,
    )


def fetch_all(
    names: Iterable[str] | None = None,
    cache_dir: Path | str | None = None,
    mirror: Path | str | None = None,
    *,
    entries: Mapping[str, ManifestEntry] | None = None,
    timeout: float = TIMEOUT_S,
    download: bool = True,
) -> dict[str, Path]:
    """Fetch every file in ``names`` (default: the whole manifest); ``{name: verified cached path}``.

    Every file is attempted before anything is raised. If some could not be obtained, one
    :class:`DataUnavailableError` lists them all (URL, path for a hand-made copy, reason); files
    whose only available copy failed verification are listed there too, with the hash mismatch, and
    files the file system refused are listed at its end. If the only failures are file-system ones,
    one :class:`DataAccessError` lists them, one line per file.
    """
    entries = _entries(entries)
    selected = [_lookup(n, entries) for n in (entries if names is None else names)]
    cache_dir = _cache_dir(cache_dir)
    mirror_dir = _resolve_mirror(mirror)
    unreachable: set[str] = set()  # shared across files so an offline run fails fast
    paths_: dict[str, Path] = {}
    missing: list[MissingFile] = []
    unusable: list[AccessFailure] = []
    for e in selected:
        try:
            paths_[e.name] = _obtain(e, cache_dir, mirror_dir, timeout, unreachable, download)
        except DataUnavailableError as exc:
            missing.extend(exc.missing)
        except DataIntegrityError as exc:
            missing.append(_rejected(e, exc, cache_dir, mirror_dir))
        except DataAccessError as exc:  # e.g. disk full: the next file may still be fine (or already cached)
            unusable.extend(exc.failures)
    if missing:
        raise DataUnavailableError(missing, _mirror_note(mirror_dir), unusable)
    if unusable:
        raise DataAccessError(unusable)
    return paths_
