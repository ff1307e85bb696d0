"""The shape of the code: no import cycles inside the package (function-level imports included), no
module over 300 lines, and DVC deps that cover what each stage imports."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

SRC = REPO / "src"
PACKAGE = "transferlab"


def module_files() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its __init__.py)."""
    modules = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that `name` imports anywhere in its file (top level or in a function);
    `from a import b` counts as a.b when that is a module, else as a."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names
            ]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # a name inside a module: the module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the graph's strongly connected components."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_the_import_graph_sees_function_level_imports():
    graph = import_graph()
    assert "transferlab.outputs" in graph["transferlab.tasks.classification.train"]  # imported inside run()
    # `from transferlab.tasks.causal_lm import corpus` counts as the module corpus
    assert "transferlab.tasks.causal_lm.corpus" in graph["transferlab.tasks.causal_lm.train"]


def test_no_import_cycles_inside_the_package():
    cycles = [component for component in strongly_connected(import_graph()) if len(component) > 1]
    assert cycles == []


def test_no_module_over_300_lines():
    long = {
        str(path.relative_to(REPO)): n
        for path in sorted(SRC.rglob("*.py"))
        if (n := len(path.read_text().splitlines())) > 300
    }
    assert long == {}


def transitive_imports(roots: list[str], graph: dict[str, set[str]]) -> set[str]:
    seen, todo = set(), list(roots)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += graph[name]
    return seen


def test_each_stage_lists_the_code_it_imports_as_dvc_deps():
    """A stage's deps in dvc.yaml cover every module it imports, directly or not, for every task:
    an edit to any of them reruns the stage (a file dep, or a folder dep holding the file)."""
    import yaml

    from transferlab.stages import STAGES

    graph, files = import_graph(), module_files()
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    missing = {}
    for stage, (_, modules) in STAGES.items():
        deps = [dep if isinstance(dep, str) else next(iter(dep)) for dep in stages[stage]["deps"]]
        for name in sorted(transitive_imports(sorted(set(modules.values())), graph)):
            rel = files[name].relative_to(REPO).as_posix()
            if not any(rel == dep or rel.startswith(dep.rstrip("/") + "/") for dep in deps):
                missing.setdefault(stage, []).append(rel)
    assert missing == {}


def test_train_depends_on_every_model_key_but_how_long_texts_are_read():
    """dvc.yaml lists train's model.* keys one by one (a model.truncation change reran train, which
    never reads it): a key added to the schema later must not be forgotten there."""
    from dataclasses import fields

    import yaml

    from transferlab.config.schema import ModelConfig

    train = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["train"]["params"]
    listed = {key.removeprefix("model.") for key in train if key.startswith("model.")}
    reading = {"truncation", "window_stride", "max_windows"}  # finetune and evaluate only
    assert listed == {field.name for field in fields(ModelConfig)} - reading
