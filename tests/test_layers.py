"""The package layering (DESIGN.md, "Layers"), read from the source with `ast`, nothing executed.

Bottom to top: foundation (errors, units, run files) -> the architecture vocabulary (no torch)
-> blocks and builder -> training (data, proxy trainer, kernels, trials) -> the stages -> the
one Ray adapter -> the application (CLI, stage registry, run lifecycle). A module may import
its own layer or those below, never above; no import cycle anywhere; stages talk to each other
only through run directories; only the adapter imports Ray. Every module must be placed: a new
module without a layer fails here until it gets one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# the code's folders, bottom floor first: each folder sits on one floor, and an import may only
# run to its own folder or a lower one (search_spaces holds two adjacent module layers)
FOLDERS = (
    "foundation",
    "search_spaces",
    "training",
    "nas",
    "scaling",
    "deploy",
    "models",
    "adapters",
    "effnas",
)
PACKAGES = FOLDERS

# bottom to top; a pattern ending in ".*" covers a package and everything under it
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("foundation.*",)),
    (
        "vocabulary",
        (
            "search_spaces",
            "search_spaces.arch",
            "search_spaces.arch_config",
            "search_spaces.rounding",
            "search_spaces.plan",
            "search_spaces.cost",
            "search_spaces.official",
            "search_spaces.mnasnet",
            "search_spaces.random_arch",
            "search_spaces.latency",
            "search_spaces.latency_predictor",
        ),
    ),
    ("network", ("search_spaces.blocks", "search_spaces.builder")),
    ("training", ("training.*",)),
    ("stages", ("nas.*", "scaling.*", "deploy.*", "models.*")),
    ("adapter", ("adapters.*",)),
    ("application", ("effnas.*",)),
]
# stage packages: none imports another (they hand over through run directories)
STAGE_GROUPS = {
    "nas": "nas.*",
    "scaling": "scaling.*",
    "models": "models.*",
    "deploy": "deploy.*",
}
NO_TORCH = "vocabulary"
RAY_ONLY_IN = {"adapters.raytune", "adapters.raytrain"}


def _matches(module: str, pattern: str) -> bool:
    if pattern.endswith(".*"):
        root = pattern[:-2]
        return module == root or module.startswith(root + ".")
    return module == pattern


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports_of(path: Path, known: set[str]) -> list[tuple[str, int]]:
    """(imported name, line) for every import in the file, function-level and type-only ones
    included: they are dependencies all the same. `from a import b` is module `a.b` when that is
    a module of the project."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import"
            base = node.module or ""
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                out.append((sub if sub in known else base, node.lineno))
    return out


def layer_of(module: str) -> int | None:
    for rank, (_, patterns) in enumerate(LAYERS):
        if any(_matches(module, p) for p in patterns):
            return rank
    return None


def loaded_by_name(path: Path, known: set[str]) -> list[tuple[str, int]]:
    """Modules a file names in strings (`"nas.stage"`, `"scaling.config:GridConfig"`): the stage
    registry loads them with importlib, an import all the same, which `imports_of` cannot see.
    Only dotted names count: a stage's module is always one (`"models.convert"`), while a bare word
    that happens to name a package is a value (`--to effnas`, the config key `models`)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            name = node.value.split(":", 1)[0]
            if "." in name and name in known:
                out.append((name, node.lineno))
    return out


LOADS_BY_NAME = ("effnas.registry",)  # modules whose strings name modules they import


def graph() -> dict[str, list[tuple[str, int]]]:
    mods = modules()
    known = set(mods)
    edges = {}
    for m, path in mods.items():
        found = imports_of(path, known) + (loaded_by_name(path, known) if m in LOADS_BY_NAME else [])
        edges[m] = [(dep, line) for dep, line in found if dep in known and dep != m]
    return edges


def folder_of(module: str) -> str:
    return module.split(".")[0]


def test_every_module_has_a_layer() -> None:
    unplaced = sorted(m for m in modules() if layer_of(m) is None)
    assert not unplaced, f"modules without a layer (add them to LAYERS): {unplaced}"


def test_no_upward_import() -> None:
    bad = []
    for module, deps in graph().items():
        here = layer_of(module)
        for dep, line in deps:
            there = layer_of(dep)
            if here is not None and there is not None and there > here:
                bad.append(f"{module} ({LAYERS[here][0]}) imports {dep} ({LAYERS[there][0]}) at line {line}")
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_folders_are_floors() -> None:
    """Each folder's modules sit on one floor (search_spaces: its two adjacent layers), and no
    import runs from a folder to one above it: the drawing of the folders has no upward arrow."""
    floors: dict[str, set[int]] = {}
    for module in modules():
        floors.setdefault(folder_of(module), set()).add(layer_of(module))  # type: ignore[arg-type]
    spread = {
        f: sorted(ls) for f, ls in floors.items() if max(ls) - min(ls) > (1 if f == "search_spaces" else 0)
    }
    assert not spread, f"folders that span floors: {spread}"
    rank = {f: min(ls) for f, ls in floors.items()}
    bad = [
        f"{module} ({folder_of(module)}) imports {dep} ({folder_of(dep)}) at line {line}"
        for module, deps in graph().items()
        for dep, line in deps
        if rank[folder_of(dep)] > rank[folder_of(module)]
    ]
    assert not bad, "imports that run up a floor:\n" + "\n".join(bad)


def test_the_registry_s_module_strings_count_as_imports() -> None:
    edges = dict(graph())
    assert ("nas.stage",) in {(d,) for d, _ in edges["effnas.registry"]}
    assert "effnas.pipeline" in {d for d, _ in edges["effnas.registry"]}


def find_cycle(edges: dict[str, list[str]]) -> list[str] | None:
    """One import cycle as a path [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in edges.get(node, []):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_cycle() -> None:
    cycle = find_cycle({m: [d for d, _ in deps] for m, deps in graph().items()})
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_cycle_finder_finds_a_cycle_and_names_it() -> None:
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"], "d": []}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": ["b"], "b": [], "c": ["a", "b"]}) is None


def test_stages_do_not_import_each_other() -> None:
    def group(module: str) -> str | None:
        return next((g for g, p in STAGE_GROUPS.items() if _matches(module, p)), None)

    bad = [
        f"{module} imports {dep} at line {line}"
        for module, deps in graph().items()
        for dep, line in deps
        if group(module) and group(dep) and group(module) != group(dep)
    ]
    assert not bad, "stages import each other (hand over through run directories instead):\n" + "\n".join(bad)


def test_vocabulary_imports_no_torch_and_only_the_adapter_imports_ray() -> None:
    mods = modules()
    bad = []
    for module, path in mods.items():
        for name, line in imports_of(path, set(mods)):
            top = name.split(".")[0]
            if top in ("torch", "fvcore") and layer_of(module) == [n for n, _ in LAYERS].index(NO_TORCH):
                bad.append(f"{module} imports {name} at line {line} (the vocabulary is torch-free)")
            if top == "ray" and module not in RAY_ONLY_IN:
                bad.append(
                    f"{module} imports {name} at line {line} (Ray belongs in adapters/: raytune, raytrain)"
                )
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("module", ["search_spaces.cost", "models.describe", "scaling.scaler", "effnas.cli"])
def test_cost_model_describe_and_scale_load_no_torch(module: str) -> None:
    import subprocess
    import sys

    code = f"import {module}, sys; assert 'torch' not in sys.modules, sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
