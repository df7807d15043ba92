"""The distribution: the wheel installs `taxoclass` and nothing else at the top level (no `tune` to collide
with the PyPI package of that name), and tune/search.py is a script that needs nothing beside itself. The README
and the docs/ pages it links: every relative link resolves."""

import ast
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import REPO

SOURCES = ["pyproject.toml", "README.md", "taxoclass", "tune"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """`pip wheel --no-deps` of a copy of the sources (the build writes build/ and *.egg-info beside them);
    its build dependencies come from pip's configured index (offline: the local one)."""
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("wheel")
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy(REPO / name, src / name)
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    (path,) = out.glob("taxoclass-*.whl")
    with zipfile.ZipFile(path) as whl:
        return {name: whl.read(name).decode("utf-8", "replace") if name.endswith(".txt") else "" for name in whl.namelist()}


def test_the_wheel_installs_only_taxoclass_at_the_top_level(wheel):
    top = {name.split("/")[0] for name in wheel if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"taxoclass"}  # before: {"taxoclass", "tune"}
    (top_level,) = [text for name, text in wheel.items() if name.endswith(".dist-info/top_level.txt")]
    assert top_level.split() == ["taxoclass"]
    # the search travels inside the package, with the presets and the demo data
    assert {"taxoclass/search/tuner.py", "taxoclass/search/flags.py", "taxoclass/search/objectives.py",
            "taxoclass/presets/demo.yaml", "taxoclass/data/demo/labels.txt"} <= set(wheel)
    (entry_points,) = [text for name, text in wheel.items() if name.endswith(".dist-info/entry_points.txt")]
    assert "taxoclass = taxoclass.cli:main" in entry_points


def test_tune_search_py_runs_from_anywhere_on_the_installed_package(tmp_path):
    """A copy of the entry point in an empty folder is the whole search: it reaches the package as installed,
    not through a path of the checkout (-I: neither the script's folder nor PYTHONPATH is on sys.path)."""
    script = tmp_path / "search.py"
    shutil.copy(REPO / "tune" / "search.py", script)
    res = subprocess.run([sys.executable, "-I", str(script), "--num-samples", "0"], capture_output=True, text=True,
                         cwd=tmp_path, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1] == "tune/search.py: error: argument --num-samples: expected at least 1, got 0"


def _imports_of(path: Path, modules: set[str]) -> set[str]:
    """The taxoclass modules a file imports anywhere (module level, TYPE_CHECKING blocks, inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            # `from taxoclass.pipeline import steps` imports the submodule, not the package's other modules
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module for a in node.names]
        else:
            continue
        found.update(n for n in names if n in modules)
    return found


def test_no_import_cycle_at_run_time_or_in_type_hints():
    """Issue 30: the runtime was typed on the run context, which called back into the steps that called it."""
    files = {".".join(f.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): f
             for f in (REPO / "taxoclass").rglob("*.py")}
    graph = {name: _imports_of(path, set(files)) - {name} for name, path in files.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for nxt in sorted(graph[name]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(nxt):] + [name, nxt]))
            if nxt not in state:
                visit(nxt, path + [name])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    assert graph["taxoclass.runtime"].isdisjoint({"taxoclass.pipeline.context", "taxoclass.pipeline"})


def _markdown_pages():
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation other than - and _ dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_relative_link_of_the_readme_and_docs_resolves():
    """Issue 30 split the README into docs/ pages: every relative link (README -> docs/x.md, docs -> ../README.md,
    a page -> another's #anchor) names a file that exists and, with an anchor, a heading of that file."""
    anchors = {}
    for page in _markdown_pages():
        text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
        anchors[page.resolve()] = {_anchor(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}
    broken, count = [], 0
    for page in _markdown_pages():
        text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto
            count += 1
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page.resolve()
            if not file.exists():
                broken.append(f"{page.relative_to(REPO)}: {target} (no such file)")
            elif anchor and file.suffix == ".md" and anchor not in anchors.get(file, set()):
                broken.append(f"{page.relative_to(REPO)}: {target} (no heading with that anchor)")
    assert count > 30 and not broken, broken


def test_the_readme_stays_short_and_links_every_docs_page():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 300
    for page in (REPO / "docs").glob("*.md"):
        assert f"](docs/{page.name})" in readme, f"README links no docs/{page.name}"
