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


def _import_graph(root: Path | None = None) -> dict[str, set[str]]:
    """{module: the taxoclass modules it imports}, for every module of the package under `root` (the checkout's)."""
    root = root or REPO
    files = {".".join(f.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): f
             for f in (root / "taxoclass").rglob("*.py")}
    return {name: _imports_of(path, set(files)) - {name} for name, path in files.items()}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> list[str] | None:
        state[name] = 1
        for nxt in sorted(graph[name]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [name, nxt] if nxt in path else path + [name, nxt]
            if nxt not in state and (cycle := visit(nxt, path + [name])):
                return cycle
        state[name] = 2
        return None

    for name in sorted(graph):
        if name not in state and (cycle := visit(name, [])):
            return cycle
    return None


def test_no_import_cycle_at_run_time_or_in_type_hints():
    """Issue 30: the runtime was typed on the run context, which called back into the steps that called it."""
    graph = _import_graph()
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
    assert graph["taxoclass.runtime"].isdisjoint({"taxoclass.pipeline.context", "taxoclass.pipeline"})


# Issue 36: which folder of the package may import which. Each folder sits above the ones it names: the engine's
# training plumbing below its loops (stages), the jobs that run them above both, then the pipeline that builds the
# jobs, the runtimes that run them (distributed: never the pipeline, which never imports a runtime either) and the
# search on top. An arrow the other way (training -> stages, as training/job.py and silver.py had) fails.
FOLDER_IMPORTS = {
    "data": set(),
    "training": {"data"},
    "stages": {"data", "training"},
    "jobs": {"data", "training", "stages"},
    "pipeline": {"data", "training", "stages", "jobs"},
    "distributed": {"data", "training", "stages", "jobs"},
    "search": {"data", "training", "stages", "jobs", "pipeline", "distributed"},
}


def _folder(module: str) -> str:
    """A module's folder (`taxoclass.stages.model` -> `stages`); a module at the top level stands for itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and (REPO / "taxoclass" / parts[1]).is_dir()) else module


def _folder_arrows_back_up(graph: dict[str, set[str]]) -> list[str]:
    wrong = []
    for name, imported in sorted(graph.items()):
        for other in sorted(imported):
            a, b = _folder(name), _folder(other)
            if a in FOLDER_IMPORTS and b in FOLDER_IMPORTS and a != b and b not in FOLDER_IMPORTS[a]:
                wrong.append(f"{a} -> {b} ({name} imports {other})")
    return wrong


def test_no_folder_imports_a_folder_above_it():
    graph = _import_graph()
    folders = {_folder(name) for name in graph if name.count(".") >= 2}
    assert folders == set(FOLDER_IMPORTS), "place each folder in FOLDER_IMPORTS"
    wrong = _folder_arrows_back_up(graph)
    assert not wrong, "a folder imports one above it: " + "; ".join(wrong)
    # nor through a module at the top level (training -> predict.py -> stages): folders and those modules, no cycle
    contracted = {}
    for name, imported in graph.items():
        contracted.setdefault(_folder(name), set()).update(_folder(m) for m in imported)
    cycle = _find_cycle({node: targets - {node} for node, targets in contracted.items()})
    assert cycle is None, "a cycle between folders: " + " -> ".join(cycle)


def test_importing_the_cli_or_the_pipeline_loads_no_torch():
    """The scorers' properties are read when a run starts (`stages/similarity.py`); the module that holds them
    imports torch only where a scorer is built: `taxoclass --help` or `taxoclass report` pay no torch start-up."""
    res = subprocess.run([sys.executable, "-c", "import sys, taxoclass.cli, taxoclass.pipeline, taxoclass.stages.similarity; "
                          "print(sorted({'torch', 'transformers'} & set(sys.modules)))"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "[]", res.stdout + res.stderr[-2000:]


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


# a comparison with a backend's name: `s.backend == "nli"`, `"nli" in values`, `backend != ...`
BACKEND_COMPARISON = re.compile(r"""backend\s*(==|!=|\bin\b|\bnot\s+in\b)|(==|!=|\bin\b)\s*[(\[]?\s*["'](nli|biencoder)["']"""
                                r"""|["'](nli|biencoder)["']\s*(==|!=|\bin\b|\bnot\s+in\b)""")


def test_only_the_stage_1_module_tells_scorers_apart_by_name():
    """Issue 36: what a scorer can do (embed documents once, be pruned, be refined) is a property of its class in
    stages/similarity.py; no other module compares `similarity.backend` with a name (config.py lists the values)."""
    from typing import get_args

    from taxoclass.config import SimilarityConfig
    from taxoclass.stages.similarity import SCORERS

    assert set(SCORERS) == set(get_args(SimilarityConfig.model_fields["backend"].annotation))
    for scorer in SCORERS.values():
        assert {type(getattr(scorer, p)) for p in ("embeds_documents", "prunable", "refinable")} == {bool}
    found = []
    for path in sorted([*(REPO / "taxoclass").rglob("*.py"), *(REPO / "tune").rglob("*.py"), *(REPO / "scripts").rglob("*.py")]):
        if path == REPO / "taxoclass" / "stages" / "similarity.py":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if BACKEND_COMPARISON.search(line):
                found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not found, "ask the scorer (stages/similarity.py) instead:\n" + "\n".join(found)


def test_the_readme_code_map_names_every_module_where_it_is():
    """Issue 36: modules moved (amp.py, the jobs) and the map must follow: README's "Where things live" names each
    module of the package, in its folder, and nothing that is not there."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Where things live.*?```\n(.*?)```", readme, flags=re.S).group(1)
    named, folders = set(), []  # folders: (indent, path) of the folders the current line sits in
    for line in block.splitlines():
        if not line.strip() or not line.lstrip().split()[0].endswith(("/", ".py")):
            continue  # a description carried over to the next line
        indent, first = len(line) - len(line.lstrip()), line.split()[0]
        folders = [(i, f) for i, f in folders if i < indent]
        where = "/".join(f for _, f in folders)
        if first.endswith("/"):
            folders.append((indent, first.rstrip("/")))
            # a folder whose modules the map lists on its own line (`data/  taxonomy.py, readers.py, ...`)
            named.update(f"{where}/{first}{name}".lstrip("/") for name in re.findall(r"\b(\w+\.py)\b", line[len(first) + indent:]))
        else:
            named.add(f"{where}/{first}".lstrip("/"))
    actual = {str(f.relative_to(REPO)) for f in (REPO / "taxoclass").rglob("*.py") if f.name != "__init__.py"}
    assert {n for n in named if n.startswith("taxoclass/")} == actual
