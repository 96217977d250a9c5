"""Fault injection in the data layer: each test reproduces one fault found by a fault-injection run.

Every file here is a SYNTHETIC FIXTURE written by the test into pytest's tmp_path (a few kB of
made-up CSV text, a tiny made-up manifest, fake panel builders); the real cache (data/raw), the
real processed panels (data/processed) and the real mirror are never read or written, and nothing
leaves 127.0.0.1. Disk-full and permission faults are simulated by monkeypatching an ``OSError``
(tests may run as root, where chmod does not stop writes), and the file-size limit is a real
RLIMIT_FSIZE in a child process.

The rules under test: a user's mistake is one line (file, field, what to do), never a traceback;
derived files are silently rebuilt; nothing half-written is left behind; nothing verified is
overwritten by something unverified.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import resource
import subprocess
import sys
import threading
import types
from pathlib import Path
from urllib.parse import quote, urlsplit

import filelock
import pandas as pd
import pytest
import yaml

import analysis.fetch as fetch_mod
from analysis import panels, paths
from analysis.__main__ import main
from analysis.fetch import (
    DataAccessError,
    DataIntegrityError,
    DataUnavailableError,
    ManifestMismatchError,
    fetch,
    fetch_all,
)
from analysis.manifest import RAW_PREFIX, ManifestError, load_manifest
from analysis.paths import ROOT

COMMIT = "89abcdef0123456789abcdef0123456789abcdef"
# Synthetic payloads, a few kB each.
ALPHA = b"region,year,value\n" + b"".join(b"synthetic-alpha,%d,%d\n" % (2000 + i % 20, i) for i in range(300))
BETA = b"code,count\n" + b"".join(b"SYN%04d,%d\n" % (i, i * 7) for i in range(400))
DEAD_URL = "http://127.0.0.1:9"  # discard port: refused at once, never leaves the machine


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _entry(name: str, url: str, data: bytes, **override) -> dict:
    return {
        "name": name,
        "url": url,
        "sha256": _sha(data),
        "size": len(data),
        "licence": "synthetic fixture",
        "citation": "synthetic fixture written by tests/test_data_faults.py",
        "description": f"synthetic fixture {name}",
        **override,
    }


def _raw_url(relpath: str) -> str:
    return f"{RAW_PREFIX}synthetic-owner/synthetic-repo/{COMMIT}/{quote(relpath)}"


def _write_manifest(tmp_path: Path, files: list[dict]) -> Path:
    path = tmp_path / "manifest.yml"
    path.write_text(yaml.safe_dump({"files": files}, sort_keys=False), encoding="utf-8")
    return path


def _mirror_with(tmp_path: Path, files: dict[str, bytes]) -> tuple[Path, list[dict]]:
    """A synthetic mirror holding ``{relpath: bytes}``, and manifest entries pinning those bytes."""
    mirror = tmp_path / "mirror"
    mirror.mkdir(exist_ok=True)
    entries = []
    for rel, data in files.items():
        target = mirror / "synthetic-owner" / "synthetic-repo" / COMMIT / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        entries.append(_entry(Path(rel).stem, _raw_url(rel), data))
    return mirror, entries


def _leftovers(d: Path) -> list[str]:
    """Temp files in ``d`` (what a failed or killed write could leave)."""
    return sorted(p.name for p in d.iterdir() if p.name.endswith(".part")) if d.exists() else []


def _one_line_errors(err: str) -> list[str]:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err
    assert all(line.startswith("error: ") for line in lines), lines
    return lines


@pytest.fixture(autouse=True)
def _isolated(monkeypatch):
    """No real mirror, and no download may leave 127.0.0.1."""
    monkeypatch.setenv("THIRD_PILLAR_MIRROR", "")
    real_download = fetch_mod._download

    def guarded(url, out, timeout):
        assert urlsplit(url).hostname == "127.0.0.1", f"test tried to download {url}"
        return real_download(url, out, timeout)

    monkeypatch.setattr(fetch_mod, "_download", guarded)


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


@pytest.fixture
def fake_panels(tmp_path, monkeypatch):
    """Every panel built by a fake builder (synthetic 2-row frame) into tmp_path/'processed'."""
    processed = tmp_path / "processed"
    calls: list[str] = []

    def builder(name):
        def build():
            calls.append(name)
            return pd.DataFrame({"fips": ["01001", "01003"], "year": [2014, 2014], "x": [1.0, 2.0]}), {"note": name}

        return build

    monkeypatch.setattr(panels.paths, "PROCESSED_DIR", processed)
    for name in panels.PANELS:
        monkeypatch.setitem(panels.BUILDERS, name, builder(name))
    monkeypatch.setattr(panels, "validate", lambda name, df: df)
    # The key depends on the real manifest and builder source; a fixed one keeps these tests to the cache logic.
    monkeypatch.setattr(panels, "cache_key", lambda name: {"panel": name, "synthetic": True})
    return processed, calls


# --- 1. a damaged panel sidecar is out of date, not an error ----------------------------------


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda text: text.encode()[:20] + b"\xff" + text.encode()[20:], id="non-utf8-byte"),
        pytest.param(lambda text: json.dumps("a string, not a dict").encode(), id="json-string"),
        pytest.param(lambda text: json.dumps([1, 2, 3]).encode(), id="json-list"),
        pytest.param(lambda text: text.encode()[: len(text) // 2], id="truncated-json"),
    ],
)
def test_damaged_sidecar_is_rebuilt_silently(fake_panels, damage):
    processed, calls = fake_panels
    panels.load("us_counties_waves")
    side = processed / "us_counties_waves.json"
    side.write_bytes(damage(side.read_text(encoding="utf-8")))

    df = panels.load("us_counties_waves")  # before the fix: UnicodeDecodeError / AttributeError

    assert len(df) == 2 and calls == ["us_counties_waves"] * 2
    assert isinstance(json.loads(side.read_text(encoding="utf-8")), dict)
    assert panels.build_report("us_counties_waves")["note"] == "us_counties_waves"


# --- 2. temp files left by a killed build are removed under the lock ----------------------------


def test_part_files_left_by_a_killed_build_are_removed(fake_panels):
    processed, calls = fake_panels
    panels.load("us_counties_waves")
    # What a SIGKILL just before os.replace leaves behind (synthetic bytes).
    (processed / ".us_counties_waves.parquet.k1ll3d.part").write_bytes(b"half a parquet")
    (processed / ".us_counties_waves.json.k1ll3d.part").write_bytes(b'{"half":')
    other = processed / ".us_counties_annual.parquet.busy.part"  # another panel's: not ours to delete
    other.write_bytes(b"another panel")

    df = panels.load("us_counties_waves")

    assert len(df) == 2 and calls == ["us_counties_waves"]  # still current: cleaned, not rebuilt
    assert _leftovers(processed) == [other.name]


def test_part_files_are_left_alone_until_the_lock_is_free(fake_panels):
    processed, _ = fake_panels
    panels.load("us_counties_waves")
    live = processed / ".us_counties_waves.parquet.live.part"
    live.write_bytes(b"synthetic: being written by whoever holds the lock")
    loader = threading.Thread(target=panels.load, args=("us_counties_waves",))
    with filelock.FileLock(str(processed / ".us_counties_waves.lock")):  # another builder at work
        loader.start()
        loader.join(timeout=0.3)
        assert loader.is_alive() and live.exists()  # load() waits for the lock before deleting anything
    loader.join(timeout=10)
    assert not loader.is_alive() and not live.exists()


# --- 3. read-only directories, disk full, file-size limit ----------------------------------------


@pytest.mark.parametrize(
    ("code", "advice"),
    [
        (errno.ENOSPC, "free disk space"),
        (errno.EFBIG, "ulimit -f"),
        (errno.EROFS, "read-only file system"),
        (errno.EACCES, "write access"),
    ],
)
def test_cli_reports_each_unwritable_raw_file_in_one_line_and_tries_every_file(
    tmp_path, cache, capsys, monkeypatch, code, advice
):
    mirror, files = _mirror_with(
        tmp_path, {"data/alpha.csv": ALPHA, "data/beta.csv": BETA, "data/gamma.csv": BETA + b"g\n"}
    )
    manifest = _write_manifest(tmp_path, files)
    real_copy = fetch_mod.shutil.copyfile
    attempts = []

    def copy_fails_for_alpha_and_gamma(src, dst, *a, **k):
        attempts.append(Path(src).name)
        if Path(src).name != "beta.csv":
            # As the real calls do: open(dst) names the temp file; shutil names the *source* in a
            # failed write (ENOSPC, EFBIG) while copying.
            raise OSError(code, os.strerror(code), str(src if code in (errno.ENOSPC, errno.EFBIG) else dst))
        return real_copy(src, dst, *a, **k)

    monkeypatch.setattr(fetch_mod.shutil, "copyfile", copy_fails_for_alpha_and_gamma)

    rc = main(["data", "--fetch-only", "--manifest", str(manifest), "--cache-dir", str(cache), "--mirror", str(mirror)])

    lines = _one_line_errors(capsys.readouterr().err)
    assert rc == 1
    assert attempts == ["alpha.csv", "beta.csv", "gamma.csv"]  # the first failure did not stop the rest
    assert len(lines) == 2
    for name, line in zip(("alpha", "gamma"), lines):
        assert line.startswith(f"error: {name}: cannot ")
        assert str(cache / f"{name}.csv") in line and os.strerror(code) in line and advice in line
    assert (cache / "beta.csv").read_bytes() == BETA
    assert _leftovers(cache) == []


def test_unwritable_raw_dir_is_one_line_per_file_from_the_library(tmp_path, cache, monkeypatch):
    mirror, files = _mirror_with(tmp_path, {"data/alpha.csv": ALPHA, "data/beta.csv": BETA})
    entries = load_manifest(_write_manifest(tmp_path, files))

    def read_only(*a, dir=None, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(Path(dir) / ".x.part"))

    monkeypatch.setattr(fetch_mod.tempfile, "mkstemp", read_only)

    with pytest.raises(DataAccessError) as info:
        fetch_all(cache_dir=cache, mirror=mirror, entries=entries)

    assert isinstance(info.value, OSError) and info.value.errno == errno.EACCES
    assert [f.name for f in info.value.failures] == ["alpha", "beta"]
    assert str(info.value).splitlines() == info.value.lines
    assert f"alpha: cannot access {cache / 'alpha.csv'}: Permission denied" in info.value.lines[0]
    assert "--cache-dir" in info.value.lines[0]


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores directory permissions")
def test_cli_read_only_cache_dir_by_chmod(tmp_path, cache, capsys):
    mirror, files = _mirror_with(tmp_path, {"data/alpha.csv": ALPHA})
    manifest = _write_manifest(tmp_path, files)
    cache.mkdir()
    cache.chmod(0o555)
    try:
        rc = main(
            ["data", "--fetch-only", "--manifest", str(manifest), "--cache-dir", str(cache), "--mirror", str(mirror)]
        )
    finally:
        cache.chmod(0o755)
    lines = _one_line_errors(capsys.readouterr().err)
    assert rc == 1 and len(lines) == 1 and str(cache) in lines[0]


def test_file_size_limit_is_reported_not_a_crash(tmp_path, cache):
    """A real RLIMIT_FSIZE below the file sizes: writes fail with EFBIG (Python ignores SIGXFSZ)."""
    mirror, files = _mirror_with(tmp_path, {"data/alpha.csv": ALPHA, "data/beta.csv": BETA})
    manifest = _write_manifest(tmp_path, files)
    limit = 1024  # bytes; both synthetic files are larger

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run(
        [sys.executable, "-m", "analysis", "data", "--fetch-only", "--manifest", str(manifest),
         "--cache-dir", str(cache), "--mirror", str(mirror)],
        cwd=ROOT, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}, preexec_fn=limit_file_size,
        capture_output=True, text=True, timeout=60, check=False,
    )

    assert proc.returncode == 1, proc.stderr
    lines = _one_line_errors(proc.stderr)
    assert len(lines) == 2
    assert all("File too large" in line and "ulimit -f" in line for line in lines)
    assert str(cache / "alpha.csv") in lines[0] and str(cache / "beta.csv") in lines[1]
    assert _leftovers(cache) == [] and not (cache / "alpha.csv").exists()


def test_full_disk_while_writing_panels_is_one_line_per_panel_and_every_panel_is_tried(
    fake_panels, monkeypatch
):
    processed, calls = fake_panels
    real_replace = os.replace
    full = {panels.PANELS[0], panels.PANELS[-1]}

    def replace(src, dst, *a, **k):
        if Path(dst).parent == processed and Path(dst).stem in full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", replace)

    with pytest.raises(DataAccessError) as info:
        panels.build_all()

    assert sorted(calls) == sorted(panels.PANELS)  # every panel was tried
    lines = info.value.lines
    assert len(lines) == 2
    for name, line in zip((panels.PANELS[0], panels.PANELS[-1]), lines):
        assert line.startswith(f"panel {name}: cannot write {processed / (name + '.parquet')}: No space left")
        assert "THIRD_PILLAR_PROCESSED" in line
    built = [n for n in panels.PANELS if n not in full]
    assert all((processed / f"{n}.parquet").exists() for n in built)
    assert not any((processed / f"{n}.parquet").exists() for n in full)
    assert _leftovers(processed) == []


def test_cli_full_disk_while_writing_panels(tmp_path, cache, capsys, monkeypatch, fake_panels):
    mirror, files = _mirror_with(tmp_path, {"data/alpha.csv": ALPHA})
    manifest = _write_manifest(tmp_path, files)
    real_write = panels._atomic_write_bytes

    def disk_full(target, data):
        if target.suffix == ".parquet":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))
        return real_write(target, data)

    monkeypatch.setattr(panels, "_atomic_write_bytes", disk_full)

    rc = main(["data", "--manifest", str(manifest), "--cache-dir", str(cache), "--mirror", str(mirror)])

    lines = _one_line_errors(capsys.readouterr().err)
    assert rc == 1
    assert [line.split(":")[1].split()[-1] for line in lines] == list(panels.PANELS)
    assert all("No space left on device" in line for line in lines)


# --- 4. manifest field types ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("size", str(len(ALPHA)), f"field 'size' must be an integer, got a string '{len(ALPHA)}'"),
        ("size", True, "field 'size' must be an integer, got a boolean"),
        ("size", 1.5, "field 'size' must be an integer, got a number"),
        ("size", 0, "field 'size' must be a positive number of bytes"),
        ("url", None, "field 'url' must be a string, got empty"),
        ("name", 2019, "field 'name' must be a string, got an integer"),
        ("sha256", ["a"], "field 'sha256' must be a string, got a list"),
    ],
)
def test_manifest_field_of_wrong_type_is_one_line_naming_entry_and_field(tmp_path, field, value, expected):
    manifest = _write_manifest(tmp_path, [{**_entry("alpha", f"{DEAD_URL}/alpha.csv", ALPHA), field: value}])
    with pytest.raises(ManifestError) as info:
        load_manifest(manifest)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"{manifest}: entry 0")
    assert expected in msg
    if field != "name":
        assert "(alpha)" in msg


def test_cli_quoted_size_is_one_line_not_a_corrupt_file_or_crash(tmp_path, cache, capsys):
    manifest = _write_manifest(tmp_path, [_entry("alpha", f"{DEAD_URL}/alpha.csv", ALPHA, size=str(len(ALPHA)))])
    cache.mkdir()
    (cache / "alpha.csv").write_bytes(ALPHA)  # a good file

    for mode in ("--check", "--fetch-only"):
        rc = main(["data", mode, "--manifest", str(manifest), "--cache-dir", str(cache)])
        out, err = capsys.readouterr()
        lines = _one_line_errors(err)
        assert rc == 1 and len(lines) == 1 and "corrupt" not in out
        assert "alpha" in lines[0] and "'size'" in lines[0] and "unquoted" in lines[0]


def test_cli_missing_manifest_is_one_line(tmp_path, capsys):
    rc = main(["data", "--check", "--manifest", str(tmp_path / "nope.yml")])
    lines = _one_line_errors(capsys.readouterr().err)
    assert rc == 1 and len(lines) == 1
    assert str(tmp_path / "nope.yml") in lines[0] and "does not exist" in lines[0]


def test_manifest_entry_that_is_not_a_mapping(tmp_path):
    manifest = tmp_path / "manifest.yml"
    manifest.write_text("files:\n- just a string\n", encoding="utf-8")
    with pytest.raises(ManifestError, match=r"entry 0 is a string, not a mapping"):
        load_manifest(manifest)


# --- 5. a wrong hash in the manifest is blamed on the manifest when two copies agree ---------------


@pytest.mark.parametrize("wrong", ["sha256", "size"])
def test_cache_and_mirror_agree_but_manifest_differs(tmp_path, cache, wrong):
    mirror, files = _mirror_with(tmp_path, {"data/alpha.csv": ALPHA})
    pinned = files[0]["sha256"]
    if wrong == "sha256":
        files[0]["sha256"] = pinned = _sha(b"a mistyped hash")
    else:
        files[0]["size"] = len(ALPHA) + 1
    entries = load_manifest(_write_manifest(tmp_path, files))
    cache.mkdir()
    (cache / "alpha.csv").write_bytes(ALPHA)

    with pytest.raises(ManifestMismatchError) as info:
        fetch("alpha", cache, mirror, entries=entries)

    msg = str(info.value)
    assert msg.startswith("alpha: the manifest and the file disagree")
    assert pinned in msg and _sha(ALPHA) in msg
    assert str(cache / "alpha.csv") in msg and "mirror" in msg
    assert "damaged" not in msg  # the mirror is not blamed
    assert (cache / "alpha.csv").read_bytes() == ALPHA and _leftovers(cache) == []

    with pytest.raises(DataUnavailableError, match="the manifest and the file disagree"):
        fetch_all(cache_dir=cache, mirror=mirror, entries=entries)


def test_mirror_still_blamed_when_it_differs_from_the_cache(tmp_path, cache):
    mirror, files = _mirror_with(tmp_path, {"data/alpha.csv": ALPHA[:-2] + b"X\n"})
    files[0].update(sha256=_sha(ALPHA))
    entries = load_manifest(_write_manifest(tmp_path, files))
    cache.mkdir()
    (cache / "alpha.csv").write_bytes(ALPHA[:-2] + b"Y\n")  # corrupt in another way

    with pytest.raises(DataIntegrityError) as info:
        fetch("alpha", cache, mirror, entries=entries)
    assert not isinstance(info.value, ManifestMismatchError)
    assert "The mirror copy is damaged" in str(info.value)


# --- 6. the error header says what was tried ---------------------------------------------------------


def test_header_when_downloads_are_off(tmp_path, cache, capsys):
    manifest = _write_manifest(tmp_path, [_entry("alpha", f"{DEAD_URL}/alpha.csv", ALPHA)])
    with pytest.raises(DataUnavailableError) as info:
        fetch_all(cache_dir=cache, entries=load_manifest(manifest), download=False)
    header = str(info.value).splitlines()[0]
    assert "download failed" not in header and "no download was tried" in header
    assert "download: not tried (downloads are switched off)" in str(info.value)

    rc = main(["data", "--fetch-only", "--no-download", "--manifest", str(manifest), "--cache-dir", str(cache)])
    assert rc == 1 and "no download was tried" in capsys.readouterr().err


def test_header_when_only_the_mirror_was_tried(tmp_path, cache):
    mirror, files = _mirror_with(tmp_path, {"data/alpha.csv": ALPHA[:100]})  # wrong size in the mirror
    files[0].update(sha256=_sha(ALPHA), size=len(ALPHA))
    with pytest.raises(DataUnavailableError) as info:
        fetch_all(cache_dir=cache, mirror=mirror, entries=load_manifest(_write_manifest(tmp_path, files)))
    assert str(info.value).splitlines()[0].endswith(
        "(no verified copy in the cache or the mirror, and no download was tried)."
    )


def test_header_when_the_lock_was_never_obtained(tmp_path, cache, monkeypatch):
    entries = load_manifest(_write_manifest(tmp_path, [_entry("alpha", f"{DEAD_URL}/alpha.csv", ALPHA)]))
    monkeypatch.setattr(fetch_mod, "LOCK_TIMEOUT_S", 0.05)
    (cache / fetch_mod.LOCK_DIRNAME).mkdir(parents=True)
    with filelock.FileLock(cache / fetch_mod.LOCK_DIRNAME / "alpha.csv.lock"):
        with pytest.raises(DataUnavailableError) as info:
            fetch("alpha", cache, entries=entries)
    msg = str(info.value)
    assert "(no verified copy in the cache, and no download was tried)" in msg
    assert "lock: another process held" in msg


def test_header_when_some_downloads_failed_and_others_were_skipped(tmp_path, cache):
    files = [_entry("alpha", f"{DEAD_URL}/alpha.csv", ALPHA), _entry("beta", f"{DEAD_URL}/beta.csv", BETA)]
    with pytest.raises(DataUnavailableError) as info:
        fetch_all(cache_dir=cache, entries=load_manifest(_write_manifest(tmp_path, files)))
    assert "and the download failed or was not tried)" in str(info.value).splitlines()[0]


# --- 7. a mirror path that is a file ------------------------------------------------------------------


def test_mirror_path_that_is_a_file_is_not_a_directory(tmp_path, cache):
    not_a_dir = tmp_path / "mirror.tar"
    not_a_dir.write_bytes(b"synthetic, not a directory")
    entries = load_manifest(_write_manifest(tmp_path, [_entry("alpha", _raw_url("data/alpha.csv"), ALPHA)]))
    with pytest.raises(DataUnavailableError) as info:
        fetch_all(cache_dir=cache, mirror=not_a_dir, entries=entries, download=False)
    mirror_line = next(line for line in str(info.value).splitlines() if line.startswith("Mirror: "))
    assert "is not a directory" in mirror_line and "does not exist" not in mirror_line


# --- 8. --cache-dir is honoured by the panel build ----------------------------------------------------


def test_cli_cache_dir_is_used_by_the_panel_build(tmp_path, cache, capsys, monkeypatch):
    mirror, files = _mirror_with(tmp_path, {"data/alpha.csv": ALPHA})
    manifest = _write_manifest(tmp_path, files)
    synthetic = load_manifest(manifest)
    default_raw = tmp_path / "default-raw"  # stands in for data/raw: must stay untouched
    monkeypatch.setattr(paths, "RAW_DIR", default_raw)
    monkeypatch.setattr(fetch_mod, "RAW_DIR", default_raw, raising=False)
    # The builders' read_raw -> fetch(name) reads the project manifest: give it the synthetic one.
    monkeypatch.setattr(fetch_mod, "load_manifest", lambda *a, **k: synthetic)
    seen = {}

    def build_all():
        # What a real builder does: read a raw file by name, with fetch's defaults.
        seen["rows"] = len(panels.read_raw("alpha"))
        seen["raw_dir"] = paths.RAW_DIR
        return {"synthetic": {"rows": seen["rows"]}}

    monkeypatch.setitem(sys.modules, "analysis.panels", types.SimpleNamespace(build_all=build_all))

    rc = main(["data", "--manifest", str(manifest), "--cache-dir", str(cache), "--mirror", str(mirror)])

    assert rc == 0, capsys.readouterr().err
    assert seen == {"rows": 300, "raw_dir": cache}
    assert not default_raw.exists()
    assert paths.RAW_DIR == default_raw  # restored after the build


# --- 9. --timeout must be positive ------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "-5", "nan", "inf", "soon"])
def test_timeout_must_be_a_positive_number(value, capsys):
    with pytest.raises(SystemExit) as info:
        main(["data", "--check", f"--timeout={value}"])
    err = capsys.readouterr().err
    assert info.value.code == 2
    assert "argument --timeout" in err and value in err and "Traceback" not in err


# --- a raw file that changed shape: one line from the command line, not a traceback -------------


def test_cli_renamed_raw_column_is_one_line(tmp_path, cache, capsys, monkeypatch):
    from analysis.schemas import RawInputError

    mirror, files = _mirror_with(tmp_path, {"data/alpha.csv": ALPHA})
    manifest = _write_manifest(tmp_path, files)

    def build_all():
        raise RawInputError("alpha", "missing column(s) 'cfips'; the file has: fips, year, lf\nmore detail")

    monkeypatch.setitem(sys.modules, "analysis.panels", types.SimpleNamespace(build_all=build_all))
    rc = main(["data", "--manifest", str(manifest), "--cache-dir", str(cache), "--mirror", str(mirror)])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.strip() == "error: alpha: missing column(s) 'cfips'; the file has: fips, year, lf"
