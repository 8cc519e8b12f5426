"""The package's shape (docs/architecture.md): one direction of dependency, no cycles, no private names
taken across modules, files of one job each."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BESIDE = ("diti_sd.benchmarks", "diti_sd.testing", "diti_sd.cli")


def _graph_script():
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "eval" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_cycles_and_no_private_names_across_modules():
    script = _graph_script()
    graph = script.imports()
    assert script.cycles(graph) == []
    assert script.private_imports(graph) == []
    assert script.main([]) == 0


def test_the_library_never_imports_the_benchmark_the_test_support_or_the_cli():
    graph = _graph_script().imports()
    library = [m for m in graph if not m.startswith(BESIDE)]
    assert "diti_sd.classifier" in library and "diti_sd.scoring.engine" in library
    wrong = {m: sorted(d for d in graph[m] if d.startswith(BESIDE)) for m in library}
    assert {m: d for m, d in wrong.items() if d} == {}


def test_the_script_sees_an_import_cycle_and_a_private_name(tmp_path):
    # the checks above would pass on a script that saw nothing: show it sees both on a package made to have them
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from .b import helper\n")
    (package / "b.py").write_text("def helper():\n    from .a import x\n\n\nfrom .c import _hidden\n")
    (package / "c.py").write_text("_hidden = 1\n")
    script = _graph_script()
    graph = script.imports(package)
    assert script.cycles(graph) == [["pkg.a", "pkg.b"]]
    assert script.private_imports(graph) == ["pkg.b -> pkg.c._hidden"]
    assert script.main(["--root", str(package)]) == 1


def test_modules_keep_to_one_job():
    longest = max((len(p.read_text().splitlines()), p.relative_to(ROOT).as_posix())
                  for p in (ROOT / "diti_sd").rglob("*.py"))
    assert longest[0] <= 450, longest
