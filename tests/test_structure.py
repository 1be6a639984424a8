"""The package's shape: no two modules import each other, directly or around a loop, and none imports from a layer
above its own."""
import ast
from pathlib import Path

SOURCE = Path(__file__).parents[1] / "src"


def _module_name(path: Path) -> str:
    name = ".".join(path.relative_to(SOURCE).with_suffix("").parts)
    return name[: -len(".__init__")] if name.endswith(".__init__") else name


def _imports(path: Path) -> set[str]:
    """Every discopose module ``path`` imports, at module level or inside functions (a lazy import is a
    dependency too: it only hides the loop until the function runs)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("discopose"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("discopose"))
    return found


def _loops(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, loops = {}, {}, [], set(), []

    def visit(module):
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in graph[module]:
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == module:
                    break
            if len(component) > 1:
                loops.append(sorted(component))

    for module in graph:
        if module not in index:
            visit(module)
    return loops


def test_no_import_loops():
    files = {_module_name(path): path for path in SOURCE.rglob("*.py")}
    assert "discopose.estimator.api" in files and "discopose.models.checkpoint" in files
    graph = {name: {other for other in _imports(path) if other in files and other != name}
             for name, path in files.items()}
    assert _loops(graph) == []
    # The detector finds a loop when there is one.
    assert _loops({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


# Packages whose order is set, lowest first: a module never imports from a package above its own. The
# realistic proxy renders through render/ and writes through datasets/; neither may reach back up into it.
LAYERS = ("render", "datasets", "realistic")
# The realistic proxy is only ever evaluated on: the entry points that render it are its only importers.
REALISTIC_IMPORTERS = {"cli", "demo"}


def _package(module: str) -> str:
    """``discopose.render.renderer`` -> ``render``; ``discopose.cli`` -> ``cli``; ``discopose`` -> ``""``."""
    return module.split(".")[1] if "." in module else ""


def _upward_imports(graph: dict[str, set[str]], layers: tuple[str, ...]) -> list[tuple[str, str]]:
    """(importer, imported) pairs where a module of a package in ``layers`` imports one of a later package."""
    rank = {package: index for index, package in enumerate(layers)}
    return sorted((module, other) for module, imported in graph.items() if _package(module) in rank
                  for other in imported
                  if rank.get(_package(other), -1) > rank[_package(module)])


def test_layers():
    files = {_module_name(path): path for path in SOURCE.rglob("*.py")}
    assert {"discopose.realistic.pathtraced", "discopose.render.renderer", "discopose.datasets.generate"} <= set(files)
    graph = {name: {other for other in _imports(path) if other in files} for name, path in files.items()}
    assert _upward_imports(graph, LAYERS) == []
    realistic_importers = {_package(name) for name, imported in graph.items() if _package(name) != "realistic"
                           and any(_package(other) == "realistic" for other in imported)}
    assert realistic_importers <= REALISTIC_IMPORTERS, realistic_importers
    # The check finds an import running back up the layers when there is one.
    assert _upward_imports({"discopose.render.gl": {"discopose.realistic.webcam"},
                            "discopose.realistic.webcam": {"discopose.render.gl", "discopose.datasets.format"}},
                           LAYERS) == [("discopose.render.gl", "discopose.realistic.webcam")]


def test_evaluation_needs_neither_the_network_classes_nor_torchvision():
    """Scoring predictions labels the markings' class with ``canonical_index``, which is geometry: it lives in
    ``geometry/``, so evaluation imports neither the network module nor the torchvision backbones for it."""
    import subprocess
    import sys
    for module in ("models/evaluate.py", "evaluation.py"):
        imported = _imports(SOURCE / "discopose" / module)
        assert not imported & {"discopose.models.pose_net", "discopose.models.backbones"}, (module, imported)
    code = ("import sys, discopose.models.evaluate, discopose.evaluation\n"
            "print(sorted(m for m in ('torchvision', 'discopose.models.pose_net') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "[]", (result.stdout, result.stderr[-2000:])
