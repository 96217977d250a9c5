"""Keep the two environment descriptions in step.

``requirements.lock`` (exact pins for pip) is the source of truth; ``environment.yml`` (conda and
Binder) is generated from it so that both name the same versions of the same packages. Run as
``python -m analysis.envfiles requirements.lock > environment.yml`` (``make lock`` does this).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

PYTHON_VERSION = "3.11"
# ``name==version``, optionally with an environment marker (``; sys_platform == 'darwin'``).
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)\s*(;.*)?$")
_HASH = re.compile(r"\s+--hash=\S+")


def canonical(name: str) -> str:
    """PEP 503 normalised package name (``Jinja2`` and ``jinja2`` are one package)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_lines(lines: list[str]) -> list[tuple[int, str]]:
    """Logical requirement lines (line number, text) with backslash continuations joined and
    ``--hash`` options removed: the lock is hash-checked, but a pin is still ``name==version``.
    """
    out: list[tuple[int, str]] = []
    buf, start = "", 0
    for i, raw in enumerate(lines, 1):
        if not buf:
            start = i
        line = raw.rstrip()
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        out.append((start, _HASH.sub("", buf + line).strip()))
        buf = ""
    if buf:
        out.append((start, _HASH.sub("", buf).strip()))
    return out


def parse_pins(lines: list[str], source: str) -> dict[str, str]:
    """``name==version`` lines (hashes and markers allowed) to {canonical name: version};
    anything else is an error.
    """
    pins: dict[str, str] = {}
    for i, line in requirement_lines(lines):
        if not line or line.startswith("#"):
            continue
        m = _PIN.match(line)
        if not m:
            raise ValueError(f"{source}:{i}: not an exact pin (name==version): {line!r}")
        pins[canonical(m.group(1))] = m.group(2)
    return pins


def lock_pins(path: Path) -> dict[str, str]:
    return parse_pins(Path(path).read_text().splitlines(), str(path))


def environment_pins(path: Path) -> dict[str, str]:
    """The pip pins inside an environment.yml."""
    env = yaml.safe_load(Path(path).read_text())
    pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    if len(pip_sections) != 1:
        raise ValueError(f"{path}: expected exactly one pip: section")
    return parse_pins(pip_sections[0], f"{path} (pip section)")


def render_environment(pins: dict[str, str], lock_lines: list[str]) -> str:
    pip_lines = [ln for _, ln in requirement_lines(lock_lines) if ln and not ln.startswith("#")]
    doc = {
        "name": "third-pillar",
        "channels": ["conda-forge"],
        "dependencies": [f"python={PYTHON_VERSION}", "pip", {"pip": pip_lines}],
    }
    header = (
        "# Generated from requirements.lock by `make lock`; do not edit by hand.\n"
        "# conda env create -f environment.yml && conda activate third-pillar && pip install --no-deps -e .\n"
    )
    return header + yaml.safe_dump(doc, sort_keys=False, width=200)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    lock = Path(argv[0] if argv else "requirements.lock")
    lines = lock.read_text().splitlines()
    sys.stdout.write(render_environment(parse_pins(lines, str(lock)), lines))


if __name__ == "__main__":
    main()
