"""Dependency arrows point down only: ``detoxrl`` (the core) <- ``sft``, ``rewards`` <- ``rl``, ``evaluation``
<- ``orchestration``, ``feedback`` <- ``bench``; packages of one layer do not import each other, and no two modules
import each other (directly or round a loop). Imports inside functions count; ``if TYPE_CHECKING:`` ones do not
(they never run). The benchmarks use the public API: no private name imported, no imported module or class patched.
Each checker runs on the project and, to show it bites, on small trees that break each rule."""

from __future__ import annotations

import ast
import os
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYERS = {"detoxrl": 0, "sft": 1, "rewards": 1, "rl": 2, "evaluation": 2, "orchestration": 3, "feedback": 3,
          "bench": 4}


def _runtime_nodes(tree: ast.AST):
    """Every node except what sits under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                stack.extend(child.orelse)
                continue
            stack.append(child)


def module_graph(root: str) -> dict[str, set[str]]:
    """``{module: project modules it imports}`` for every ``.py`` under the packages of ``LAYERS``."""
    files = {}
    for package in LAYERS:
        for folder, _, names in os.walk(os.path.join(root, package)):
            for name in names:
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    mod = os.path.relpath(path, root)[:-3].replace(os.sep, ".").removesuffix(".__init__")
                    files[mod] = path
    graph = defaultdict(set)
    for mod, path in files.items():
        for node in _runtime_nodes(ast.parse(open(path, encoding="utf-8").read(), path)):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            graph[mod] |= {n for n in names if n in files and n != mod}
    return graph


def problems(root: str) -> list[str]:
    graph, out = module_graph(root), []
    for mod, targets in sorted(graph.items()):
        for target in sorted(targets):
            a, b = mod.split(".")[0], target.split(".")[0]
            if a != b and LAYERS[b] >= LAYERS[a]:
                out.append(f"{mod} imports {target}: {b} is not below {a}")

    def reaches(start: str, goal: str) -> bool:
        seen, stack = set(), [start]
        while stack:
            for nxt in graph.get(stack.pop(), ()):
                if nxt == goal:
                    return True
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return False

    cycles = {tuple(sorted((m, t))) for m, ts in graph.items() for t in ts if reaches(t, m)}
    out += [f"{a} and {b} import each other (directly or round a loop)" for a, b in sorted(cycles)]
    return out


def test_the_project_imports_only_downward_and_without_loops():
    assert problems(ROOT) == []


def _tree(tmp_path, files: dict[str, str]) -> str:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return str(tmp_path)


def test_the_checker_sees_an_upward_import_inside_a_function(tmp_path):
    root = _tree(tmp_path, {"detoxrl/__init__.py": "", "detoxrl/core.py": "def f():\n    from rl.trainer import T\n",
                            "rl/__init__.py": "", "rl/trainer.py": "from detoxrl.core import f\n"})
    assert problems(root) == ["detoxrl.core imports rl.trainer: rl is not below detoxrl",
                              "detoxrl.core and rl.trainer import each other (directly or round a loop)"]


def test_the_checker_sees_a_sideways_import_and_a_loop_inside_a_package(tmp_path):
    root = _tree(tmp_path, {"sft/__init__.py": "", "sft/a.py": "import rewards.b\n", "rewards/__init__.py": "",
                            "rewards/b.py": "from rewards.c import x\n", "rewards/c.py": "from rewards import b\n"})
    assert problems(root) == ["sft.a imports rewards.b: rewards is not below sft",
                              "rewards.b and rewards.c import each other (directly or round a loop)"]


def test_type_checking_imports_do_not_count(tmp_path):
    root = _tree(tmp_path, {"detoxrl/__init__.py": "", "detoxrl/a.py": "from detoxrl.b import y\n",
                            "detoxrl/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                            "    from detoxrl.a import x\n"})
    assert problems(root) == []


def bench_problems(root: str) -> list[str]:
    """Private names imported, or attributes of imported modules and classes assigned, in ``bench/*.py``: a benchmark
    goes through the builders and callbacks (``rl/build.py``, ``rl/callbacks.py``), never around them."""
    out = []
    for folder, _, names in os.walk(os.path.join(root, "bench")):
        for name in sorted(n for n in names if n.endswith(".py")):
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, root)
            tree = ast.parse(open(path, encoding="utf-8").read(), path)
            imported = set()
            for node in ast.walk(tree):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    for a in node.names:
                        imported.add((a.asname or a.name).split(".")[0])
                        if isinstance(node, ast.ImportFrom) and a.name.startswith("_") and node.module != "__future__":
                            out.append(f"{rel}:{node.lineno}: imports the private name {node.module}.{a.name}")
            for node in ast.walk(tree):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
                    node, (ast.AugAssign, ast.AnnAssign)) else []
                for t in targets:
                    if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id in imported:
                        out.append(f"{rel}:{node.lineno}: patches {t.value.id}.{t.attr}")
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setattr" and node.args and \
                        isinstance(node.args[0], ast.Name) and node.args[0].id in imported:
                    out.append(f"{rel}:{node.lineno}: patches {node.args[0].id} with setattr")
    return out


def test_benchmarks_use_the_public_api():
    assert bench_problems(ROOT) == []


def test_the_bench_check_bites(tmp_path):
    root = _tree(tmp_path, {"bench/b.py": "from rl.trainer import DetoxPPOTrainer, _fmt\nimport rl.feature_critic as fc\n"
                                          "DetoxPPOTrainer.step = None\nfc.KINDS = ()\nsetattr(fc, 'x', 1)\n"})
    assert bench_problems(root) == ["bench/b.py:1: imports the private name rl.trainer._fmt",
                                    "bench/b.py:3: patches DetoxPPOTrainer.step", "bench/b.py:4: patches fc.KINDS",
                                    "bench/b.py:5: patches fc with setattr"]
