"""Binder's environment, generated from the lock.

Binder (repo2docker) reads only ``binder/`` when that folder exists. ``binder/requirements.txt``
is ``requirements.lock`` itself (every pin, with its hashes and environment markers) under a
header that says so, so Binder installs exactly the versions the book is built and tested with,
hash-checked; ``binder/runtime.txt`` asks for the Python the lock was resolved for, and
``binder/postBuild`` installs the ``analysis`` package and fetches the data. Run as
``python -m analysis.binder requirements.lock > binder/requirements.txt`` (``make lock`` does
this); ``tests/test_publication.py`` fails when the two disagree.
"""

from __future__ import annotations

import sys
from pathlib import Path

from analysis.envfiles import PYTHON_VERSION

HEADER = (
    "# Generated from requirements.lock by `make lock` (python -m analysis.binder); do not edit.\n"
    "# Binder (repo2docker) installs it with pip, hash-checked; binder/postBuild then installs the\n"
    "# analysis package and fetches the data.\n"
)


def lock_body(lock_text: str) -> str:
    """The lock without its own comment header (the lines starting with ``# ``)."""
    lines = lock_text.splitlines(keepends=True)
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    return "".join(lines)


def render_requirements(lock_text: str) -> str:
    return HEADER + lock_body(lock_text)


def runtime_txt() -> str:
    return f"python-{PYTHON_VERSION}\n"


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    lock = Path(argv[0] if argv else "requirements.lock")
    sys.stdout.write(render_requirements(lock.read_text()))


if __name__ == "__main__":
    main()
