"""Tests for analysis.fetch and ``python -m analysis data``.

Every file here is a SYNTHETIC FIXTURE written by the test into pytest's tmp_path (a few kB of
made-up CSV text); the real cache (data/raw) and the real mirror are never read or written,
and nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import subprocess
import sys
import threading
import time
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import pytest
import yaml

import analysis.fetch as fetch_mod
from analysis.__main__ import main
from analysis.fetch import (
    DataIntegrityError,
    DataUnavailableError,
    cached_path,
    check_cache,
    fetch,
    fetch_all,
)
from analysis.manifest import RAW_PREFIX, REQUIRED_FIELDS, load_manifest
from analysis.paths import ROOT

COMMIT = "0123456789abcdef0123456789abcdef01234567"
# Synthetic payloads: distinct, a few kB each.
ALPHA = b"region,year,value\n" + b"".join(b"synthetic-alpha,%d,%d\n" % (2000 + i % 20, i) for i in range(300))
BETA = b"code,count\n" + b"".join(b"SYN%04d,%d\n" % (i, i * 7) for i in range(400))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _tamper(data: bytes) -> bytes:
    """Same size, different bytes: only the hash can tell."""
    return data[:-2] + (b"X\n" if data[-2:] != b"X\n" else b"Y\n")


def _entry_dict(name: str, url: str, data: bytes) -> dict:
    return {
        "name": name,
        "url": url,
        "sha256": _sha(data),
        "size": len(data),
        "licence": "synthetic fixture",
        "citation": "synthetic fixture written by tests/test_fetch.py",
        "description": f"synthetic fixture {name}",
    }


def _manifest(tmp_path: Path, files: list[dict]) -> dict:
    """Write a tiny fake manifest to tmp_path and load it the way the project does."""
    path = tmp_path / "manifest.yml"
    path.write_text(yaml.safe_dump({"files": files}), encoding="utf-8")
    return load_manifest(path)


def _raw_url(relpath: str) -> str:
    return f"{RAW_PREFIX}synthetic-owner/synthetic-repo/{COMMIT}/{quote(relpath)}"


def _cache_files(cache: Path) -> list[str]:
    """Everything in the cache except the lock directory (temp files included)."""
    return sorted(p.name for p in cache.iterdir() if p.name != fetch_mod.LOCK_DIRNAME) if cache.exists() else []


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def _isolated(monkeypatch):
    """No real mirror, and no download may leave 127.0.0.1 (keeps the tests offline and deterministic)."""
    monkeypatch.setenv("THIRD_PILLAR_MIRROR", "")
    real_download = fetch_mod._download

    def guarded(url, out, timeout):
        assert urlsplit(url).hostname == "127.0.0.1", f"test tried to download {url}"
        return real_download(url, out, timeout)

    monkeypatch.setattr(fetch_mod, "_download", guarded)


class _Handler(BaseHTTPRequestHandler):
    """Serves server.root; the first path segment picks the behaviour:

    ok/ (whole file), slow/ (whole file over ~0.5 s), lie/ (Content-Length says the full size,
    half is sent, then the connection closes), short/ (no Content-Length, half is sent).
    """

    protocol_version = "HTTP/1.0"  # one request per connection; the close ends a body without length

    def do_GET(self):  # noqa: N802 (http.server API)
        self.server.hits.append(self.path)
        mode, _, rel = self.path.lstrip("/").partition("/")
        path = self.server.root / unquote(rel)
        if mode not in {"ok", "slow", "lie", "short"} or not path.is_file():
            self.send_error(404)
            return
        body = path.read_bytes()
        self.send_response(200)
        if mode != "short":
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if mode == "slow":
            step = len(body) // 10 + 1
            for i in range(0, len(body), step):
                self.wfile.write(body[i : i + step])
                self.wfile.flush()
                time.sleep(0.05)
        elif mode in {"lie", "short"}:
            self.wfile.write(body[: len(body) // 2])
        else:
            self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    """A local HTTP server on an ephemeral port serving tmp_path/'served'; ``.url(mode, name)``."""
    root = tmp_path / "served"
    root.mkdir()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.root = root
    httpd.hits = []
    httpd.url = lambda mode, name: f"http://127.0.0.1:{httpd.server_address[1]}/{mode}/{quote(name)}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


# --- download ---------------------------------------------------------------------------------


def test_download_from_local_server_is_verified_and_then_cached(tmp_path, server, cache):
    (server.root / "alpha.csv").write_bytes(ALPHA)
    entries = _manifest(tmp_path, [_entry_dict("alpha", server.url("ok", "alpha.csv"), ALPHA)])

    path = fetch("alpha", cache, entries=entries)

    assert path == cache / "alpha.csv" == cached_path("alpha", cache, entries=entries)
    assert path.read_bytes() == ALPHA
    assert path.stat().st_mode & 0o222 == 0  # raw data are read-only once verified
    assert _cache_files(cache) == ["alpha.csv"]
    assert len(server.hits) == 1
    # A second call is served from the cache: no new request.
    assert fetch("alpha", cache, entries=entries) == path
    assert len(server.hits) == 1


def test_download_hash_mismatch_names_file_and_hashes_and_caches_nothing(tmp_path, server, cache):
    (server.root / "alpha.csv").write_bytes(_tamper(ALPHA))
    url = server.url("ok", "alpha.csv")
    entries = _manifest(tmp_path, [_entry_dict("alpha", url, ALPHA)])

    with pytest.raises(DataIntegrityError) as info:
        fetch("alpha", cache, entries=entries)

    msg = str(info.value)
    assert msg.startswith("alpha: ")
    assert url in msg
    assert f"expected: sha256 {_sha(ALPHA)}" in msg
    assert f"actual:   sha256 {_sha(_tamper(ALPHA))}" in msg
    assert "size:" not in msg  # same size: only the hash differs
    assert info.value.actual_sha256 == _sha(_tamper(ALPHA))
    assert _cache_files(cache) == []


@pytest.mark.parametrize("mode", ["lie", "short"])
def test_truncated_download_leaves_nothing_in_cache(tmp_path, server, cache, mode):
    (server.root / "alpha.csv").write_bytes(ALPHA)
    entries = _manifest(tmp_path, [_entry_dict("alpha", server.url(mode, "alpha.csv"), ALPHA)])

    if mode == "lie":  # Content-Length promised more than arrived: the client notices the drop
        with pytest.raises(DataUnavailableError, match="download interrupted"):
            fetch("alpha", cache, entries=entries)
    else:  # no length announced: the size check catches it
        with pytest.raises(DataIntegrityError) as info:
            fetch("alpha", cache, entries=entries)
        assert f"expected {len(ALPHA):,} bytes, got {len(ALPHA) // 2:,} bytes (truncated" in str(info.value)
    assert _cache_files(cache) == []


def test_http_404_is_reported_as_unavailable(tmp_path, server, cache):
    entries = _manifest(tmp_path, [_entry_dict("alpha", server.url("ok", "nothing-here.csv"), ALPHA)])
    with pytest.raises(DataUnavailableError, match="HTTP 404"):
        fetch("alpha", cache, entries=entries)
    assert _cache_files(cache) == []


def test_download_times_out(tmp_path, cache):
    # A server that accepts connections (kernel backlog) but never answers.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/ok/alpha.csv"
        entries = _manifest(tmp_path, [_entry_dict("alpha", url, ALPHA)])
        start = time.monotonic()
        with pytest.raises(DataUnavailableError, match=r"no response within 0\.3 s"):
            fetch("alpha", cache, entries=entries, timeout=0.3)
        assert time.monotonic() - start < 3
    assert _cache_files(cache) == []


def test_stale_temp_files_from_a_killed_process_are_removed(tmp_path, server, cache):
    (server.root / "alpha.csv").write_bytes(ALPHA)
    entries = _manifest(tmp_path, [_entry_dict("alpha", server.url("ok", "alpha.csv"), ALPHA)])
    cache.mkdir()
    (cache / ".alpha.csv.abc123.part").write_bytes(ALPHA[:10])

    fetch("alpha", cache, entries=entries)

    assert _cache_files(cache) == ["alpha.csv"]


# --- mirror and cache -------------------------------------------------------------------------


def _mirror_entry(tmp_path: Path, data_in_mirror: bytes | None, expected: bytes = ALPHA) -> tuple[dict, Path]:
    """A raw.githubusercontent-style entry (path with a space, URL-encoded) and a mirror holding ``data_in_mirror``."""
    mirror = tmp_path / "mirror"
    rel = "data/alpha beta.csv"
    if data_in_mirror is not None:
        target = mirror / "synthetic-owner" / "synthetic-repo" / COMMIT / rel
        target.parent.mkdir(parents=True)
        target.write_bytes(data_in_mirror)
    mirror.mkdir(exist_ok=True)
    entries = _manifest(tmp_path, [_entry_dict("alpha", _raw_url(rel), expected)])
    return entries, mirror


def test_mirror_is_used_with_url_decoded_path(tmp_path, cache):
    entries, mirror = _mirror_entry(tmp_path, ALPHA)
    assert "%20" in entries["alpha"].url

    path = fetch("alpha", cache, mirror, entries=entries)

    assert path == cache / "alpha.csv"
    assert path.read_bytes() == ALPHA
    assert _cache_files(cache) == ["alpha.csv"]


def test_mirror_from_environment_variable(tmp_path, cache, monkeypatch):
    entries, mirror = _mirror_entry(tmp_path, ALPHA)
    monkeypatch.setenv("THIRD_PILLAR_MIRROR", str(mirror))
    assert fetch("alpha", cache, entries=entries).read_bytes() == ALPHA


def test_cache_hit_does_not_touch_mirror(tmp_path, cache):
    # The mirror copy is bad: had fetch looked at it, it would raise DataIntegrityError.
    entries, mirror = _mirror_entry(tmp_path, _tamper(ALPHA))
    cache.mkdir()
    (cache / "alpha.csv").write_bytes(ALPHA)

    assert fetch("alpha", cache, mirror, entries=entries).read_bytes() == ALPHA


def test_corrupt_cached_copy_is_replaced_from_mirror(tmp_path, cache):
    entries, mirror = _mirror_entry(tmp_path, ALPHA)
    cache.mkdir()
    (cache / "alpha.csv").write_bytes(_tamper(ALPHA))

    assert fetch("alpha", cache, mirror, entries=entries).read_bytes() == ALPHA
    assert _cache_files(cache) == ["alpha.csv"]


def test_mirror_hash_mismatch_names_file_and_hashes_and_caches_nothing(tmp_path, cache):
    entries, mirror = _mirror_entry(tmp_path, _tamper(ALPHA))

    with pytest.raises(DataIntegrityError) as info:
        fetch("alpha", cache, mirror, entries=entries)

    msg = str(info.value)
    assert msg.startswith("alpha: the copy from mirror ")
    assert str(mirror / "synthetic-owner" / "synthetic-repo" / COMMIT / "data" / "alpha beta.csv") in msg
    assert entries["alpha"].url in msg
    assert _sha(ALPHA) in msg and _sha(_tamper(ALPHA)) in msg
    assert "THIRD_PILLAR_MIRROR" in msg
    assert _cache_files(cache) == []


def test_mirror_copy_of_wrong_size_is_rejected_with_sizes(tmp_path, cache):
    entries, mirror = _mirror_entry(tmp_path, ALPHA[:100])

    with pytest.raises(DataIntegrityError) as info:
        fetch("alpha", cache, mirror, entries=entries)

    assert f"size:     expected {len(ALPHA):,} bytes, got 100 bytes" in str(info.value)
    assert (info.value.expected_size, info.value.actual_size) == (len(ALPHA), 100)
    assert _cache_files(cache) == []


# --- offline ----------------------------------------------------------------------------------


def test_offline_without_mirror_raises_one_error_listing_every_missing_file(tmp_path, server, cache):
    (server.root / "beta.csv").write_bytes(BETA)
    dead = f"http://127.0.0.1:{_closed_port()}"
    files = [
        _entry_dict("alpha", f"{dead}/ok/alpha.csv", ALPHA),
        _entry_dict("beta", server.url("ok", "beta.csv"), BETA),
        _entry_dict("gamma", f"{dead}/ok/gamma.csv", ALPHA + b"gamma\n"),
    ]
    entries = _manifest(tmp_path, files)

    with pytest.raises(DataUnavailableError) as info:
        fetch_all(cache_dir=cache, entries=entries)

    err = info.value
    msg = str(err)
    assert msg.startswith("2 data files could not be obtained")
    assert [m.name for m in err.missing] == ["alpha", "gamma"]
    for name in ("alpha", "gamma"):
        assert f"url:     {dead}/ok/{name}.csv" in msg
        assert f"save as: {cache / (name + '.csv')}" in msg
    assert "THIRD_PILLAR_MIRROR" in msg
    assert "cannot connect (offline?)" in msg
    # After the first refused connection the same host is not retried file by file.
    assert "not tried, 127.0.0.1:" in msg
    assert "Traceback" not in msg
    # Every file was tried: the reachable one is cached and verified.
    assert _cache_files(cache) == ["beta.csv"]
    assert check_cache(cache_dir=cache, entries=entries) == [("alpha", "missing"), ("beta", "ok"), ("gamma", "missing")]


def test_fetch_all_returns_every_path(tmp_path, server, cache):
    (server.root / "alpha.csv").write_bytes(ALPHA)
    (server.root / "beta.csv").write_bytes(BETA)
    entries = _manifest(
        tmp_path,
        [
            _entry_dict("alpha", server.url("ok", "alpha.csv"), ALPHA),
            _entry_dict("beta", server.url("ok", "beta.csv"), BETA),
        ],
    )
    assert fetch_all(cache_dir=cache, entries=entries) == {"alpha": cache / "alpha.csv", "beta": cache / "beta.csv"}
    assert fetch_all(["beta"], cache, entries=entries) == {"beta": cache / "beta.csv"}


def test_unknown_name_lists_known_names(tmp_path, cache):
    entries = _manifest(tmp_path, [_entry_dict("alpha", "http://127.0.0.1:9/a.csv", ALPHA)])
    with pytest.raises(KeyError, match="known: alpha"):
        fetch("nope", cache, entries=entries)


# --- concurrency ------------------------------------------------------------------------------

_WORKER = """
import sys, time
from pathlib import Path
from analysis.fetch import fetch
from analysis.manifest import load_manifest
manifest, cache, ready, gate = map(Path, sys.argv[1:5])
entries = load_manifest(manifest)
ready.touch()
while not gate.exists():  # start both fetches at the same moment
    time.sleep(0.005)
print(fetch("alpha", cache, entries=entries, timeout=10))
"""


def test_two_processes_fetching_the_same_file_both_succeed(tmp_path, server, cache):
    (server.root / "alpha.csv").write_bytes(ALPHA)
    entries_path = tmp_path / "manifest.yml"
    _manifest(tmp_path, [_entry_dict("alpha", server.url("slow", "alpha.csv"), ALPHA)])
    gate = tmp_path / "go"
    env = {**os.environ, "THIRD_PILLAR_MIRROR": "", "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(entries_path), str(cache), str(tmp_path / f"ready{i}"), str(gate)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(2)
    ]
    deadline = time.monotonic() + 8
    while not all((tmp_path / f"ready{i}").exists() for i in range(2)):
        assert time.monotonic() < deadline, "workers did not start"
        time.sleep(0.01)
    gate.touch()
    outputs = [p.communicate(timeout=15) for p in procs]

    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err
        assert out.strip() == str(cache / "alpha.csv")
    # One download; the process that waited on the lock found the verified copy.
    assert server.hits == ["/slow/alpha.csv"]
    assert _cache_files(cache) == ["alpha.csv"]
    assert _sha((cache / "alpha.csv").read_bytes()) == _sha(ALPHA)


# --- check_cache and the command line ---------------------------------------------------------


@pytest.fixture
def three_states(tmp_path, cache):
    """A manifest of three synthetic files: alpha cached ok, beta missing, gamma cached corrupt."""
    files = [
        _entry_dict("alpha", "http://127.0.0.1:9/alpha.csv", ALPHA),
        _entry_dict("beta", "http://127.0.0.1:9/beta.csv", BETA),
        _entry_dict("gamma", "http://127.0.0.1:9/gamma.csv", BETA + b"gamma\n"),
    ]
    _manifest(tmp_path, files)
    cache.mkdir()
    (cache / "alpha.csv").write_bytes(ALPHA)
    (cache / "gamma.csv").write_bytes(_tamper(BETA + b"gamma\n"))
    return tmp_path / "manifest.yml"


def test_check_cache_reports_ok_missing_corrupt(three_states, cache):
    entries = load_manifest(three_states)
    expected = [("alpha", "ok"), ("beta", "missing"), ("gamma", "corrupt")]
    assert check_cache(cache_dir=cache, entries=entries) == expected
    assert check_cache(["gamma"], cache, entries=entries) == [("gamma", "corrupt")]


def test_cli_check_prints_one_line_per_file_and_fails(three_states, cache, capsys):
    rc = main(["data", "--check", "--manifest", str(three_states), "--cache-dir", str(cache)])
    out = capsys.readouterr().out.splitlines()
    assert rc == 1
    assert [line.split()[:2] for line in out[:3]] == [["ok", "alpha"], ["missing", "beta"], ["corrupt", "gamma"]]
    assert out[0].endswith(str(cache / "alpha.csv"))
    assert out[3].startswith("3 files: 1 ok, 1 missing, 1 corrupt")


def test_cli_fetch_only_then_check_passes(tmp_path, server, cache, capsys):
    (server.root / "alpha.csv").write_bytes(ALPHA)
    _manifest(tmp_path, [_entry_dict("alpha", server.url("ok", "alpha.csv"), ALPHA)])
    args = ["--manifest", str(tmp_path / "manifest.yml"), "--cache-dir", str(cache)]

    assert main(["data", "--fetch-only", *args]) == 0
    assert main(["data", "--check", *args]) == 0
    out = capsys.readouterr().out
    assert "1 data files verified" in out
    assert "1 files: 1 ok, 0 missing, 0 corrupt" in out


def test_cli_offline_prints_helpful_error_without_traceback(tmp_path, cache, capsys):
    url = f"http://127.0.0.1:{_closed_port()}/ok/alpha.csv"
    _manifest(tmp_path, [_entry_dict("alpha", url, ALPHA)])

    rc = main(["data", "--fetch-only", "--manifest", str(tmp_path / "manifest.yml"), "--cache-dir", str(cache)])

    err = capsys.readouterr().err
    assert rc == 1
    assert "1 data file could not be obtained" in err
    assert url in err and str(cache / "alpha.csv") in err
    assert "Traceback" not in err


def test_cli_data_builds_panels_after_fetching(tmp_path, server, cache, capsys, monkeypatch):
    (server.root / "alpha.csv").write_bytes(ALPHA)
    _manifest(tmp_path, [_entry_dict("alpha", server.url("ok", "alpha.csv"), ALPHA)])
    args = ["data", "--manifest", str(tmp_path / "manifest.yml"), "--cache-dir", str(cache)]
    calls = []
    built = {"us_counties_waves": {"rows": 1, "built": True}}
    monkeypatch.setitem(sys.modules, "analysis.panels", types.SimpleNamespace(build_all=lambda: calls.append(1) or built))
    assert main(args) == 0
    assert calls == [1]
    assert "panel us_counties_waves: {'rows': 1, 'built': True}" in capsys.readouterr().out

    # A broken panels module is an error, never a silent skip.
    monkeypatch.setitem(sys.modules, "analysis.panels", None)
    with pytest.raises(ImportError):
        main(args)


# --- the real manifest ------------------------------------------------------------------------


def test_real_manifest_is_internally_consistent():
    entries = load_manifest()
    assert entries, "the manifest lists no files"
    for name, e in entries.items():
        assert name == e.name and re.fullmatch(r"[a-z0-9_]+", name), name
        for f in REQUIRED_FIELDS:
            assert str(getattr(e, f)).strip(), f"{name}: empty {f}"
        assert re.fullmatch(r"[0-9a-f]{64}", e.sha256), name
        assert isinstance(e.size, int) and e.size > 0, name
        assert e.url.startswith(RAW_PREFIX), name
        path = urlsplit(e.url).path
        assert " " not in e.url and quote(unquote(path)) == path, f"{name}: URL path not URL-encoded: {e.url}"
        owner, repo, commit, *rest = e.mirror_relpath.parts
        assert re.fullmatch(r"[0-9a-f]{40}", commit) and rest, f"{name}: URL not pinned to a commit: {e.url}"
        assert e.filename.startswith(name + ".") and e.filename == cached_path(name, "/c", entries=entries).name
    # Distinct files: no URL, hash or cache file name twice.
    for attr in ("url", "sha256", "filename"):
        values = [getattr(e, attr) for e in entries.values()]
        assert len(set(values)) == len(values), f"duplicate {attr}"
