"""Publishing the book (issue 15): the Pages workflow, the repository and launch buttons, Binder,
the student notebooks and the Colab setup, and what a reader of the site is promised.

The build-level checks of the buttons (two one-page books built with and without GitHub Actions'
variables) are in tests/site/test_launch.py (`make test-launch`); the accessibility of the built
site in tests/site/test_accessibility.py (`make test-site`).
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import io
import json
import os
import re
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import nbformat
import pytest
import yaml

from analysis import site, student
from analysis.binder import render_requirements, runtime_txt
from analysis.envfiles import PYTHON_VERSION, canonical, lock_pins
from analysis.paths import ROOT

WORKFLOW = ROOT / ".github" / "workflows" / "book.yml"
SHA_PIN = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+(/[A-Za-z0-9_./-]+)?@[0-9a-f]{40}$")

# ---------------------------------------------------------------------------------------------
# 1. The Pages workflow


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def _triggers(wf: dict) -> dict:
    # PyYAML reads the key `on` as the boolean True (YAML 1.1)
    on = wf.get("on", wf.get(True))
    return on if isinstance(on, dict) else {name: None for name in ([on] if isinstance(on, str) else on)}


def _steps(wf, job):
    return wf["jobs"][job]["steps"]


def _runs(wf, job) -> list[str]:
    return [step["run"].strip() for step in _steps(wf, job) if "run" in step]


def test_workflow_triggers(workflow):
    on = _triggers(workflow)
    assert on["push"]["branches"] == ["main"]
    assert "pull_request" in on and "workflow_dispatch" in on


def test_workflow_permissions_are_least_privilege(workflow):
    assert workflow["permissions"] == {"contents": "read"}, "the workflow's token must be read-only"
    writes = {job: sorted(k for k, v in (spec.get("permissions") or {}).items() if v == "write")
              for job, spec in workflow["jobs"].items()}
    assert writes.pop("deploy") == ["id-token", "pages"]
    assert all(not w for w in writes.values()), f"write permissions outside the deploy job: {writes}"
    for job, spec in workflow["jobs"].items():
        assert "permissions" in spec, f"job {job} must state its permissions"
        assert spec["permissions"] != "write-all"


def test_every_action_is_pinned_to_a_commit_sha(workflow):
    uses = [step["uses"] for job in workflow["jobs"].values() for step in job.get("steps", []) if "uses" in step]
    assert len(uses) >= 6
    unpinned = [u for u in uses if not SHA_PIN.match(u)]
    assert not unpinned, f"actions not pinned to a 40-hex commit SHA: {unpinned}"
    # each pin says which release it is
    for line in WORKFLOW.read_text().splitlines():
        if re.search(r"^\s*(-\s*)?uses:", line):
            assert re.search(r"#\s*v\d+(\.\d+)*", line), f"no version comment: {line.strip()}"


def test_workflow_builds_with_make_and_deploys_after_build(workflow):
    runs = _runs(workflow, "build")
    assert runs == ["make book", "make pdf", "make publish"], runs
    text = WORKFLOW.read_text()
    assert "jupyter-book build" not in text, "the build is defined by the Makefile, not the workflow"
    assert "secrets." not in text, "the workflow uses no secrets"
    deploy = workflow["jobs"]["deploy"]
    assert deploy["needs"] in ("build", ["build"])
    assert [s["uses"].split("@")[0] for s in deploy["steps"]] == ["actions/deploy-pages"]
    assert deploy["environment"]["name"] == "github-pages"
    assert "pull_request" in deploy["if"] and "refs/heads/main" in deploy["if"]


def test_workflow_steps(workflow):
    steps = _steps(workflow, "build")
    by_action = {s["uses"].split("@")[0]: s for s in steps if "uses" in s}
    assert by_action["actions/setup-python"]["with"]["python-version"] == "3.11"
    upload = by_action["actions/upload-pages-artifact"]
    assert upload["with"]["path"] == "_build/html"
    pages = by_action["actions/configure-pages"]
    book = next(s for s in steps if s.get("run", "").strip() == "make book")
    assert book["env"]["BOOK_BASE_URL"] == "${{ steps." + pages["id"] + ".outputs.base_url }}"
    caches = {s["with"]["path"]: s["with"]["key"] for s in steps if s.get("uses", "").startswith("actions/cache@")}
    assert set(caches) == {"~/.cache/uv", "data/raw", "_build/.jupyter_cache"}
    assert "hashFiles('data/manifest.yml')" in caches["data/raw"]
    assert "requirements.lock" in caches["~/.cache/uv"]
    order = [s.get("run", s.get("uses", "")).split("@")[0].strip() for s in steps]
    assert order.index("actions/checkout") < order.index("make book") < order.index("make pdf") \
        < order.index("make publish") < order.index("actions/upload-pages-artifact")


def _recipe(target: str) -> list[str]:
    text = (ROOT / "Makefile").read_text()
    m = re.search(rf"^{re.escape(target)}:[^\n]*\n((?:\t[^\n]*\n)+)", text, re.MULTILINE)
    assert m, f"no `{target}` target in the Makefile"
    return [line.strip() for line in m.group(1).splitlines()]


def test_makefile_publishes_the_pdf_and_the_student_notebooks():
    publish = _recipe("publish")
    assert any(line.startswith("cp _build/pdf/third-pillar-tested.pdf") and line.endswith(f"_build/html/{site.PUBLISHED_PDF}")
               for line in publish), publish
    assert any("analysis.site check --require-pdf" in line for line in publish)
    book = _recipe("book")
    build = next(i for i, line in enumerate(book) if "jupyter-book build" in line)
    students = next(i for i, line in enumerate(book) if "analysis.student notebooks" in line)
    assert students > build, "the student notebooks are written after the Sphinx build"
    assert "_build/html/_downloads/student" in book[students]
    assert any("analysis.binder" in line for line in _recipe("lock"))
    assert "test-launch" in re.search(r"^test:(.*)$", (ROOT / "Makefile").read_text(), re.MULTILINE).group(1)


# ---------------------------------------------------------------------------------------------
# 2. Repository and launch buttons: the config-inited hook


class FakeConfig(types.SimpleNamespace):
    pass


@pytest.fixture
def jb_config() -> FakeConfig:
    """The Sphinx configuration jupyter-book makes from the book's _config.yml (it fills in its
    own default repository, executablebooks/jupyter-book)."""
    from jupyter_book.config import get_final_config

    config, _meta = get_final_config(user_yaml=ROOT / "_config.yml", cli_config={"latex_individualpages": False},
                                     sourcedir=ROOT)
    return FakeConfig(html_theme_options=config["html_theme_options"], html_baseurl=config.get("html_baseurl", ""))


GITHUB_ENV = {"GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": "octo/third-pillar", "GITHUB_REF_NAME": "main"}


def test_jupyter_book_default_repository_is_what_the_hook_removes(jb_config):
    # the premise: without the hook, jupyter-book names another project's repository
    assert jb_config.html_theme_options["repository_url"] == site.JUPYTER_BOOK_DEFAULT_REPOSITORY


def test_hook_without_github_variables_names_no_repository(jb_config):
    site.configure_repository(None, jb_config, environ={"GITHUB_REPOSITORY": "octo/x"})  # incomplete: not Actions
    opts = jb_config.html_theme_options
    assert opts["repository_url"] == "" and opts["repository_branch"] == ""
    assert not any(opts[k] for k in ("use_repository_button", "use_issues_button", "use_edit_page_button"))
    assert opts["launch_buttons"] == {}
    assert "executablebooks" not in json.dumps(opts) and "github.com" not in json.dumps(opts)
    assert jb_config.html_baseurl == ""
    # other theme options from _config.yml survive
    assert opts["home_page_in_toc"] is True and "extra_footer" in opts


def test_hook_with_github_variables(jb_config):
    env = dict(GITHUB_ENV, BOOK_BASE_URL="https://octo.github.io/third-pillar")
    site.configure_repository(None, jb_config, environ=env)
    opts = jb_config.html_theme_options
    assert opts["repository_url"] == "https://github.com/octo/third-pillar"
    assert opts["repository_branch"] == "main" and opts["path_to_docs"] == ""
    assert opts["use_repository_button"] and opts["use_issues_button"] and opts["use_edit_page_button"]
    assert opts["launch_buttons"] == {"notebook_interface": "jupyterlab", "binderhub_url": "https://mybinder.org",
                                      "colab_url": "https://colab.research.google.com"}
    assert jb_config.html_baseurl == "https://octo.github.io/third-pillar/"


def test_hook_adds_a_jupyterhub_only_when_named(jb_config):
    site.configure_repository(None, jb_config, environ=dict(GITHUB_ENV, BOOK_JUPYTERHUB_URL="https://hub.example.org/"))
    assert jb_config.html_theme_options["launch_buttons"]["jupyterhub_url"] == "https://hub.example.org"
    assert "jupyterhub_url" not in site.repository_options(GITHUB_ENV)["launch_buttons"]


def test_hook_reads_the_process_environment(jb_config, monkeypatch):
    for k, v in GITHUB_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("GITHUB_REF_NAME", "release-1")
    site.configure_repository(None, jb_config)
    assert jb_config.html_theme_options["repository_branch"] == "release-1"
    for k in GITHUB_ENV:
        monkeypatch.delenv(k)
    site.configure_repository(None, jb_config)
    assert jb_config.html_theme_options["repository_url"] == ""


def test_extension_registers_the_hook():
    events = []
    app = types.SimpleNamespace(connect=lambda event, fn, priority=500: events.append((event, fn)))
    site.setup(app)
    assert ("config-inited", site.configure_repository) in events


# ---------------------------------------------------------------------------------------------
# 3. Binder


def test_binder_requirements_pin_exactly_the_lock():
    lock = ROOT / "requirements.lock"
    binder = ROOT / "binder" / "requirements.txt"
    assert lock_pins(binder) == lock_pins(lock)
    assert binder.read_text() == render_requirements(lock.read_text()), \
        "binder/requirements.txt is not the lock it is generated from: run `make lock`"
    assert "--hash=sha256:" in binder.read_text()


def test_binder_python_is_the_locks():
    assert (ROOT / "binder" / "runtime.txt").read_text() == runtime_txt() == f"python-{PYTHON_VERSION}\n"


def test_binder_postbuild_installs_the_package_and_fetches_the_data():
    post = ROOT / "binder" / "postBuild"
    assert post.is_file() and os.access(post, os.X_OK), "binder/postBuild must be executable"
    text = post.read_text()
    assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text
    commands = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    install = next(i for i, c in enumerate(commands) if re.search(r"\bpip install\b.*--no-deps\b.*-e \.$", c))
    data = commands.index("python -m analysis data")
    assert install < data
    subprocess.run(["bash", "-n", str(post)], check=True)


# ---------------------------------------------------------------------------------------------
# 4. Student notebooks

_OPEN = re.compile(r"^(`{3,}|:{3,})\{(solution|solution-start|solution-end)\}")


def solution_regions(nb) -> tuple[list[str], list[str]]:
    """An independent reading of a notebook's solutions (line by line, not with MyST's parser):
    (the solutions' text lines and code, everything else), both as lists of stripped lines."""
    inside, outside = [], []
    gated = False
    for cell in nb["cells"]:
        src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        if cell["cell_type"] != "markdown":
            (inside if gated else outside).extend(src.splitlines())
            continue
        fence = None  # (char, length, name) of an open directive
        for line in src.splitlines():
            m = _OPEN.match(line.strip()) if fence is None else None
            if m:
                fence = (m.group(1)[0], len(m.group(1)), m.group(2))
                if m.group(2) == "solution-start":
                    gated = True
                inside.append(line)
                continue
            if fence is not None:
                inside.append(line)
                if re.fullmatch(rf"{re.escape(fence[0])}{{{fence[1]},}}\s*", line.strip()):
                    if fence[2] == "solution-end":
                        gated = False
                    fence = None
                continue
            (inside if gated else outside).append(line)
        if fence is not None and fence[2] == "solution-end":  # an unclosed solution-end runs to the cell's end
            gated = False
    return [ln.strip() for ln in inside if ln.strip()], [ln.strip() for ln in outside if ln.strip()]


def _text(nb) -> str:
    return "\n".join("".join(c["source"]) if isinstance(c["source"], list) else c["source"] for c in nb["cells"])


CHAPTERS = student.chapter_notebooks()


def test_every_chapter_is_found():
    toc = [d for d in site.toc_docnames(ROOT / "_toc.yml") if re.match(r"book/\d\d", d)]
    assert [f"book/{p.stem}" for p in CHAPTERS] == toc
    assert len(CHAPTERS) >= 13


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("student")
    written = student.write_student_notebooks(out)
    assert [p.name for p in written] == [p.name for p in CHAPTERS]
    return out


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_student_notebook(chapter, student_dir):
    source = json.loads(chapter.read_text())
    out = nbformat.read(student_dir / chapter.name, as_version=4)
    nbformat.validate(out)
    text = _text(out)

    # no solution survives: no directive, and no line of a solution's text or code that is not
    # also in the chapter outside its solutions
    assert not re.search(r"\{solution(-start|-end)?\}", text)
    inside, outside = solution_regions(source)
    assert inside, f"{chapter.name}: no solutions found in the chapter"
    kept_lines = {ln.strip() for ln in text.splitlines()}
    outside = set(outside)
    leaked = [ln for ln in inside if ln not in outside and ln in kept_lines and not _OPEN.match(ln) and not re.fullmatch(r"[:`]{3,}", ln)]
    assert not leaked, f"{chapter.name}: solution lines in the student notebook: {leaked[:3]}"
    _, removed = student.split_solutions(source)
    n_directives = len(re.findall(r"^\s*(?:`{3,}|:{3,})\{solution(?:-start)?\}", _text(source), re.MULTILINE))
    assert len(removed) == n_directives

    # every exercise survives, with its label, in order, and its text
    labels = re.findall(r"^\s*(?:`{3,}|:{3,})\{exercise(?:-start)?\}[^\n]*\n(?:\s*:(?!label)[^\n]*\n)*\s*:label:\s*(\S+)",
                        _text(source), re.MULTILINE)
    assert labels and student.exercise_labels(out) == student.exercise_labels(source) == labels
    for name, _arg, _s, _e, content in (d for c in source["cells"] if c["cell_type"] == "markdown"
                                         for d in student.directives("".join(c["source"]))):
        if name == "exercise":
            assert content.strip() in text

    # no outputs
    code = [c for c in out.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)

    # nothing the kept code uses was defined only in a removed solution's code
    kept_stored, kept_loaded = _names([c.source for c in code])
    removed_stored, _ = _names([part for s in removed for part in s.parts if _is_python(part)])
    dangling = {n for n in kept_loaded if n in removed_stored and n not in kept_stored and not hasattr(builtins, n)}
    assert not dangling, f"{chapter.name}: the student notebook uses names only its solutions define: {sorted(dangling)}"


def _is_python(src: str) -> bool:
    try:
        ast.parse(src)
        return True
    except SyntaxError:
        return False


def _names(sources) -> tuple[set, set]:
    stored, loaded = set(), set()
    for src in sources:
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.Name):
                (loaded if isinstance(node.ctx, ast.Load) else stored).add(node.id)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                stored.add(node.name)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                stored |= {(a.asname or a.name).split(".")[0] for a in node.names}
            elif isinstance(node, ast.arg):
                stored.add(node.arg)
    return stored, loaded


def test_student_zip_and_index(student_dir):
    with zipfile.ZipFile(student_dir / student.ZIP_NAME) as zf:
        names = zf.namelist()
        assert names == [f"third-pillar-student/{p.name}" for p in CHAPTERS]
        assert zf.read(names[0]) == (student_dir / CHAPTERS[0].name).read_bytes()
    index = (student_dir / "index.html").read_text()
    assert f'href="{student.ZIP_NAME}"' in index and all(f'href="{p.name}"' in index for p in CHAPTERS)
    # the same chapters give the same zip
    again = student_dir / "again"
    student.write_student_notebooks(again)
    assert (again / student.ZIP_NAME).read_bytes() == (student_dir / student.ZIP_NAME).read_bytes()


def _nb(*cells):
    out = []
    for i, (kind, src) in enumerate(cells):
        cell = {"cell_type": kind, "id": f"c{i}", "metadata": {}, "source": src}
        if kind == "code":
            cell.update(outputs=[{"output_type": "stream", "name": "stdout", "text": "x\n"}], execution_count=1)
        out.append(cell)
    return {"cells": out, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def test_split_solutions_on_every_form():
    nb = _nb(
        ("markdown", "## Exercises\n\n:::{exercise}\n:label: ex-a\n\nDo A.\n:::\n\n:::{solution-start} ex-a\n:class: dropdown\n:::\n\nGATED-A text."),
        ("code", "answer_a = 1"),
        ("markdown", "GATED-A more.\n\n:::{solution-end}\n:::\n\nAfter A, kept."),
        ("markdown", "```{exercise}\n:label: ex-b\nDo B.\n```\n\n```{solution} ex-b\n:class: dropdown\nBLOCK-B text.\n```\nAfter B, kept."),
        ("markdown", "::::{solution} ex-c\n:::{note}\nNESTED-C note.\n:::\nBLOCK-C text.\n::::\n"),
        ("markdown", ":::{solution-start} ex-d\n:::\nGATED-D one cell.\n:::{solution-end}\n"),
        ("markdown", "Closing words."),
    )
    out, removed = student.split_solutions(nb)
    text = _text(out)
    for secret in ("GATED-A", "answer_a", "BLOCK-B", "NESTED-C", "BLOCK-C", "GATED-D", "{solution"):
        assert secret not in text
    for kept in ("## Exercises", "Do A.", "After A, kept.", "Do B.", "After B, kept.", "Closing words."):
        assert kept in text
    assert [(s.label, s.kind) for s in removed] == [("ex-a", "gated"), ("ex-b", "block"), ("ex-c", "block"), ("ex-d", "gated")]
    assert "answer_a = 1" in removed[0].parts
    assert student.exercise_labels(out) == ["ex-a", "ex-b"]
    with pytest.raises(ValueError, match="without"):
        student.split_solutions(_nb(("markdown", ":::{solution-start} ex-x\n:::\nnever closed")))
    full = student.student_notebook(nb)
    assert full["cells"][0]["id"] == "student-note"
    assert all(c["outputs"] == [] for c in full["cells"] if c["cell_type"] == "code")


# ---------------------------------------------------------------------------------------------
# 4b. Colab: the science pins and the setup cell


def _science_closure() -> set[str]:
    """Every package the scientific direct requirements need, on any platform, from the installed
    metadata of the project's environment (which is built from the lock)."""
    from importlib import metadata

    from packaging.requirements import Requirement

    envs = [{"sys_platform": p, "platform_system": s, "os_name": o, "extra": ""}
            for p, s, o in (("linux", "Linux", "posix"), ("darwin", "Darwin", "posix"), ("win32", "Windows", "nt"))]
    direct = [canonical(re.split(r"[<>=!~;\[ ]", line.strip())[0])
              for line in (ROOT / "requirements.in").read_text().splitlines() if line.strip() and not line.startswith("#")]
    todo = [d for d in direct if not (student.is_jupyter_stack(d) or student.is_tooling(d))]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.distribution(name).requires or []
        except metadata.PackageNotFoundError:
            continue
        for r in requires:
            req = Requirement(r)
            if req.marker is None or any(req.marker.evaluate(env) for env in envs):
                todo.append(canonical(req.name))
    return seen


def test_colab_requirements_leave_out_the_jupyter_stack_and_the_tools():
    pins = student.colab_requirements()
    names = {canonical(p.split("==")[0]) for p in pins}
    lock = lock_pins(ROOT / "requirements.lock")
    for name in ("ipykernel", "ipython", "tornado", "pyzmq", "traitlets", "nbformat", "nbclient", "jupyter-client",
                 "jupyter-core", "jupyterlab", "jupyter-server", "comm", "debugpy", "jupyter-book", "sphinx", "pytest",
                 "playwright", "myst-nb"):
        assert name not in names, name
    for name in ("numpy", "pandas", "scipy", "statsmodels", "linearmodels", "pyfixest", "geopandas", "matplotlib", "pyyaml"):
        assert f"{name}=={lock[name]}" in {p.split(" ;")[0] for p in pins}, name
    assert all("--hash" not in p for p in pins)


def test_colab_requirements_are_the_science_closure():
    """Every pin is needed by the scientific packages, and every package they need is pinned
    unless it belongs to the Jupyter stack; a new package in the lock must be classified."""
    closure = _science_closure()
    lock = set(lock_pins(ROOT / "requirements.lock"))
    names = {canonical(p.split("==")[0]) for p in student.colab_requirements()}
    assert names - closure == set(), "pinned for Colab but not needed by the science: add it to student.TOOLING"
    missing = {n for n in closure & lock if not student.is_jupyter_stack(n)} - names
    assert missing == set(), f"needed by the science but not pinned for Colab: {sorted(missing)}"
    unclassified = lock - closure - {n for n in lock if student.is_jupyter_stack(n) or student.is_tooling(n)}
    assert unclassified == set(), f"in the lock but neither science, Jupyter stack nor tooling: {sorted(unclassified)}"


def test_colab_requirements_command_runs_without_third_party_imports(tmp_path):
    # a fresh clone on Colab runs this before anything is installed (PyYAML is there)
    code = "import sys, analysis.student; print(sorted(m for m in ('pandas', 'numpy', 'bs4', 'markdown_it', 'nbformat') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    cli = subprocess.run([sys.executable, "-m", "analysis.student", "colab-requirements"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert cli == student.colab_requirements()


URL = "https://github.com/octo/third-pillar"


class Recorder:
    def __init__(self, clone_root: Path):
        self.calls, self.clone_root = [], clone_root

    def __call__(self, args, **kwargs):
        self.calls.append(list(args))
        if args[:2] == ["git", "clone"]:
            (Path(kwargs["cwd"]) / args[-1] / "book").mkdir(parents=True)
        stdout = "numpy==2.4.6\n" if "colab-requirements" in args else ""
        return subprocess.CompletedProcess(args, 0, stdout=stdout, stderr="")


def _exec_cell(source: str) -> tuple[dict, str]:
    ns: dict = {}
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        exec(compile(source, "<colab-setup>", "exec"), ns)  # noqa: S102 - the cell is what is tested
    ns.pop("__builtins__", None)
    return ns, buf.getvalue()


@pytest.mark.parametrize("url", [URL, None])
def test_colab_cell_does_nothing_outside_colab(url, tmp_path, monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("ran a command outside Colab"))
    path_before, cwd_before = list(sys.path), os.getcwd()
    ns, output = _exec_cell(student.colab_cell_source(url, "main"))
    assert output == "" and ns == {}
    assert sys.path == path_before and os.getcwd() == cwd_before and list(tmp_path.iterdir()) == []


def test_colab_cell_on_colab_clones_installs_the_science_pins_and_fetches_data(tmp_path, monkeypatch):
    source = student.colab_cell_source(URL, "main")
    assert f"'git', 'clone', '--depth', '1', '--branch', 'main', '{URL}', 'third-pillar'" in source
    assert "requirements.lock" not in source
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    rec = Recorder(tmp_path)
    monkeypatch.setattr(subprocess, "run", rec)
    _exec_cell(source)
    steps = [" ".join(c[1:] if c[0] == sys.executable else c) for c in rec.calls]
    assert steps == [
        f"git clone --depth 1 --branch main {URL} third-pillar",
        "-m analysis.student colab-requirements",
        "-m pip install --quiet -r colab-requirements.txt",
        "-m pip install --quiet --no-deps -e .",
        "-m analysis data",
    ]
    clone = tmp_path / "third-pillar"
    assert (clone / "colab-requirements.txt").read_text() == "numpy==2.4.6\n"
    assert Path(os.getcwd()) == clone / "book" and str(clone) in sys.path
    # run again, from the clone's book/ (the same session) or from the start (after a restart):
    # no second clone, and the same clone
    for cwd in (clone / "book", tmp_path):
        monkeypatch.chdir(cwd)
        rec.calls.clear()
        _exec_cell(source)
        assert not any(c[:2] == ["git", "clone"] for c in rec.calls) and len(rec.calls) == 4
        assert Path(os.getcwd()) == clone / "book"


def test_colab_cell_without_a_repository_says_so_and_does_nothing_else(monkeypatch, tmp_path):
    source = student.colab_cell_source(None)
    assert "git" not in source and "pip" not in source
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("ran a command"))
    ns, output = _exec_cell(source)
    assert ns == {} and len(output.splitlines()) == 1 and "not public yet" in output
    assert list(tmp_path.iterdir()) == []


def test_ensure_colab_cell(tmp_path):
    # the chapter as it was before the setup cell was added (the committed chapters have it)
    bare = json.loads(CHAPTERS[0].read_text())
    bare["cells"] = [c for c in bare["cells"] if "colab-setup" not in c.get("metadata", {}).get("tags", [])]
    source = tmp_path / "bare.ipynb"
    source.write_text(json.dumps(bare, indent=1, ensure_ascii=False, sort_keys=True) + "\n")
    nb_path = tmp_path / CHAPTERS[0].name
    nb_path.write_text(source.read_text())
    n_cells = len(bare["cells"])
    citation = tmp_path / "CITATION.cff"
    citation.write_text("cff-version: 1.2.0\ntitle: x\n")  # no repository-code: the cell says so
    assert student.repository_url_from_citation(citation) is None
    assert student.ensure_colab_cell(nb_path, citation_path=citation)
    nb = nbformat.read(nb_path, as_version=4)
    nbformat.validate(nb)
    first = nb.cells[0]
    assert first.cell_type == "code" and first.metadata["tags"] == ["remove-cell", "colab-setup"] and first.outputs == []
    assert "not public yet" in first.source and len(nb.cells) == n_cells + 1
    assert not student.ensure_colab_cell(nb_path, citation_path=citation), "a second run changes nothing"
    citation.write_text(f"cff-version: 1.2.0\ntitle: x\nrepository-code: {URL}\n")
    assert student.ensure_colab_cell(nb_path, branch="main", citation_path=citation)
    nb = nbformat.read(nb_path, as_version=4)
    assert len(nb.cells) == n_cells + 1 and URL in nb.cells[0].source and "git" in nb.cells[0].source
    assert nb.cells[1:] == nbformat.read(source, as_version=4).cells
    # the file is written as nbformat writes it: the diff is the inserted cell alone
    import difflib

    diff = [ln for ln in difflib.unified_diff(source.read_text().splitlines(), nb_path.read_text().splitlines(),
                                              lineterm="", n=0) if ln.startswith(("+", "-")) and not ln.startswith(("+++", "---"))]
    assert all(ln.startswith("+") for ln in diff), diff[:5]


def test_the_books_repository_url_is_not_invented():
    # CITATION.cff names no repository today: the cell would say it is not public yet
    url = student.repository_url_from_citation()
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert url == (cff.get("repository-code") or None)


# ---------------------------------------------------------------------------------------------
# 5. What the book promises its readers


def test_teaching_appendix_steps():
    text = (ROOT / "book" / "appendix_teaching.md").read_text()
    assert f'href="../_downloads/student/{student.ZIP_NAME}"' in text
    assert 'href="../_downloads/student/index.html"' in text
    blocks = re.findall(r"```(\w*)\n(.*?)```", text, re.DOTALL)
    colab = next(body for _lang, body in blocks if "git clone" in body)
    assert "requirements.lock" not in colab and "python -m analysis.student colab-requirements" in colab
    assert "python -m analysis data" in colab
    local = next(body for _lang, body in blocks if ".venv/bin/jupyter lab" in body)
    assert "make data" in local
    # the local steps work: JupyterLab is in the lock and in the project's environment
    assert "jupyterlab" in lock_pins(ROOT / "requirements.lock")
    jupyter = Path(sys.executable).parent / "jupyter"
    version = subprocess.run([str(jupyter), "lab", "--version"], capture_output=True, text=True, check=True).stdout.strip()
    assert version == lock_pins(ROOT / "requirements.lock")["jupyterlab"]


def test_preface_links_the_published_pdf():
    text = (ROOT / "book" / "preface.md").read_text()
    assert f'href="../{site.PUBLISHED_PDF}"' in text
    assert site.PUBLISHED_PDF in site.OPTIONAL_TARGETS


def test_pdf_link_is_optional_only_until_published(tmp_path):
    (tmp_path / "book").mkdir()
    (tmp_path / "index.html").write_text("<html><body><a href='book/p.html'>p</a></body></html>")
    (tmp_path / "book" / "p.html").write_text(f"<html><body><a href='../{site.PUBLISHED_PDF}'>pdf</a></body></html>")
    assert site.check_links(tmp_path) == []
    problems = site.check_links(tmp_path, optional=())
    assert [p.kind for p in problems] == ["broken link"]
    (tmp_path / site.PUBLISHED_PDF).parent.mkdir(parents=True)
    (tmp_path / site.PUBLISHED_PDF).write_bytes(b"%PDF-1.7\n")
    assert site.check_links(tmp_path, optional=()) == []


def test_logo_favicon_footer_and_execution_appendix():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert (ROOT / config["logo"]).is_file()
    favicon = ROOT / config["html"]["favicon"]
    assert favicon.is_file() and favicon.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    footer = config["html"]["extra_footer"]
    assert "MIT" in footer and "CC BY 4.0" in footer and "creativecommons.org/licenses/by/4.0" in footer
    licence = (ROOT / "LICENSE").read_text()
    assert "MIT License" in licence and "CC-BY-4.0" in licence
    assert "custom.css" in config["sphinx"]["config"]["html_css_files"]
    assert "book/appendix_execution" in site.toc_docnames(ROOT / "_toc.yml")
    assert "```{nb-exec-table}" in (ROOT / "book" / "appendix_execution.md").read_text()


def test_bibliography_entries_are_list_items():
    html = '<div role="list" class="citation-list"><div class="citation" id="id1" role="doc-biblioentry"><p>A.</p></div></div>'
    assert site.citation_list_roles(html) == html.replace("doc-biblioentry", "listitem")
    context = {"body": html}
    site._fix_citation_roles(None, "book/bibliography", "page.html", context, None)
    assert 'role="listitem"' in context["body"] and "doc-biblioentry" not in context["body"]


def test_a_resolved_reference_that_is_itself_a_link_is_not_flagged(tmp_path):
    # {nb-exec-table} writes each document as <a class="xref doc reference internal" href=...>
    (tmp_path / "index.html").write_text(
        '<html><body><a class="xref doc reference internal" href="index.html"><span class="doc">book/x</span></a>'
        '<span class="xref std std-ref">missing-label</span></body></html>')
    problems = site.check_xrefs(tmp_path)
    assert [p.detail for p in problems] == ["xref std std-ref: 'missing-label'"]


def test_every_chapter_has_the_colab_setup_cell_first():
    for path in CHAPTERS:
        first = json.loads(path.read_text())["cells"][0]
        assert "colab-setup" in first["metadata"].get("tags", []), path.name
        assert "remove-cell" in first["metadata"]["tags"] and first["outputs"] == [], path.name
