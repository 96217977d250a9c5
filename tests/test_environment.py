"""The pip lock and the conda/Binder environment must pin the same versions of the same packages."""

import pytest

from analysis.envfiles import canonical, environment_pins, lock_pins, parse_pins
from analysis.paths import ROOT


def test_lock_and_environment_agree():
    lock = lock_pins(ROOT / "requirements.lock")
    env = environment_pins(ROOT / "environment.yml")
    only_lock = sorted(set(lock) - set(env))
    only_env = sorted(set(env) - set(lock))
    differ = sorted(k for k in set(lock) & set(env) if lock[k] != env[k])
    assert not (only_lock or only_env or differ), (
        f"requirements.lock and environment.yml disagree: only in lock {only_lock}, "
        f"only in environment.yml {only_env}, different versions {differ}; run `make lock`"
    )


def test_direct_dependencies_are_locked():
    direct = [canonical(line.split(">")[0].split("<")[0].split("=")[0].strip())
              for line in (ROOT / "requirements.in").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    lock = lock_pins(ROOT / "requirements.lock")
    assert [d for d in direct if d not in lock] == []


def test_jupyter_book_is_version_1():
    # jupyter-book 2.x ignores _config.yml and _toc.yml; the book is built with 1.x.
    version = lock_pins(ROOT / "requirements.lock")["jupyter-book"]
    major, minor, patch = (int(x) for x in version.split(".")[:3])
    assert major == 1 and (minor, patch) >= (0, 4)


def test_disagreement_is_detected():
    assert parse_pins(["pandas==3.1.1"], "a") != parse_pins(["pandas==3.1.0"], "b")
    with pytest.raises(ValueError, match="not an exact pin"):
        parse_pins(["pandas>=3"], "x")


@pytest.mark.parametrize("name", ["requirements.lock", "requirements-uv.txt"])
def test_every_pin_is_hash_checked(name):
    # `make` installs with --require-hashes: a pin without a hash would fail the install, and a
    # pin is only as good as the hash that proves the downloaded file is the one that was locked.
    from analysis.envfiles import requirement_lines

    lines = (ROOT / name).read_text().splitlines()
    logical = [(i, ln) for i, ln in requirement_lines(lines) if ln and not ln.startswith("#")]
    raw = "\n".join(lines)
    unhashed = [ln for _, ln in logical if f"{ln} \\\n    --hash=sha256:" not in raw]
    assert logical and unhashed == []


def test_hashes_and_markers_are_parsed():
    from analysis.envfiles import requirement_lines

    lines = ["numpy==2.4.0 \\", "    --hash=sha256:aa \\", "    --hash=sha256:bb",
             "appnope==1.0.0 ; sys_platform == 'darwin' \\", "    --hash=sha256:cc"]
    assert requirement_lines(lines) == [(1, "numpy==2.4.0"), (4, "appnope==1.0.0 ; sys_platform == 'darwin'")]
    assert parse_pins(lines, "x") == {"numpy": "2.4.0", "appnope": "1.0.0"}
