"""The floors of instageo/ (docs/architecture.md): a module imports only from its own floor
or the floors below it, lazy imports inside functions included (they hide an upward
dependency, they do not remove it), and no two modules import each other in a circle.
The reference is the source itself, read with ast; nothing of instageo is imported."""

import ast
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "instageo"

# lowest first; a module may import its own floor and any floor below
FLOORS = [
    {"errors", "files", "dates", "logs", "redact", "timing", "progress", "outputs", "__init__"},
    {"recipe"},
    {"runner"},
    {"data"},
    {"engine"},
    {"model"},
    {"deploy"},
    {"pipeline"},
    {"cli", "cli_catalog", "__main__"},
]


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports(path: Path) -> set[str]:
    """Every instageo module ``path`` imports, at its top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("instageo")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("instageo"):
            assert node.level == 0, f"{path}: relative import"  # the project spells imports in full
            found.add(node.module)
            # `from instageo.deploy import predict` imports the module instageo.deploy.predict
            found |= {f"{node.module}.{a.name}" for a in node.names if is_module(f"{node.module}.{a.name}")}
    return found


def graph() -> dict[str, set[str]]:
    return {module_name(path): imports(path) for path in PACKAGE.rglob("*.py")}


def floor(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    return next(i for i, names in enumerate(FLOORS) if top in names)


def test_every_top_level_name_has_a_floor():
    tops = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    assert tops <= set().union(*FLOORS), tops - set().union(*FLOORS)


def test_no_module_imports_from_a_higher_floor():
    upward = sorted(f"{a} -> {b}" for a, targets in graph().items() for b in targets if floor(b) > floor(a))
    assert not upward, "\n".join(upward)


def test_no_modules_import_each_other_in_a_circle():
    edges = graph()
    circles = []

    def visit(node, path, on_path, done):
        on_path.add(node)
        path.append(node)
        for target in sorted(edges.get(node, ())):
            if target in on_path:
                circles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in done and target in edges:
                visit(target, path, on_path, done)
        path.pop()
        on_path.discard(node)
        done.add(node)

    done: set[str] = set()
    for start in sorted(edges):
        if start not in done:
            visit(start, [], set(), done)
    # a package's __init__ importing its own modules, which import the package's names, is not a circle
    circles = [c for c in circles if not all(part.startswith(c.split(" -> ")[0]) for part in c.split(" -> "))]
    assert not circles, "\n".join(circles)


def test_the_walk_sees_lazy_imports():
    """cli.py imports the standalone predictor only inside `instarun predict`: the walk
    that found nothing upward must be one that sees such imports."""
    source = (PACKAGE / "cli.py").read_text()
    assert "\n    from instageo.deploy.standalone import" in source
    assert "instageo.deploy.standalone" in imports(PACKAGE / "cli.py")


def third_party_imports(path: Path) -> set[str]:
    """The top-level names of every package ``path`` imports, lazily or not."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_the_engine_needs_no_torch_no_runner_and_no_recipe_object():
    """engine/ (every prediction's code) runs where only numpy, ONNX Runtime and rasterio
    are: it imports no torch, and of the recipe only the section types a TileSpec holds."""
    for path in (PACKAGE / "engine").glob("*.py"):
        assert "torch" not in third_party_imports(path), path
        ours = imports(path)
        assert not {m for m in ours if m.startswith(("instageo.runner", "instageo.model"))}, path
        assert not ours & {"instageo.recipe.models", "instageo.recipe.loader"}, path
