"""Every ``from X import Y`` in the project, at module level or inside a function, resolves against the installed
packages. Function-level imports run only on the path that needs them (a CUDA machine, a hub model, a GPU
setting), so a name a library dropped would otherwise surface on a user's machine first (trl 1.x dropped
``get_kbit_device_map``, which the k-bit loader imported on CUDA only)."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("detoxrl", "sft", "rl", "rewards", "evaluation", "orchestration", "feedback", "bench")
OPTIONAL = ("detoxify", "deepspeed", "vllm", "selenium", "mutmut")  # extras a test machine may lack


def _imports():
    for package in PACKAGES:
        for folder, _, files in os.walk(os.path.join(ROOT, package)):
            for name in sorted(files):
                if not name.endswith(".py"):
                    continue
                path = os.path.join(folder, name)
                tree = ast.parse(open(path, encoding="utf-8").read(), path)
                for node in ast.walk(tree):
                    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                        for alias in node.names:
                            yield os.path.relpath(path, ROOT), node.lineno, node.module, alias.name


def test_every_from_import_resolves():
    missing = []
    for path, line, module, name in _imports():
        if module.split(".")[0] in OPTIONAL and importlib.util.find_spec(module.split(".")[0]) is None:
            continue
        if module == "__future__" or name == "*":
            continue
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            missing.append(f"{path}:{line}: from {module} import {name}: {exc}")
            continue
        if not hasattr(mod, name) and importlib.util.find_spec(f"{module}.{name}") is None:
            missing.append(f"{path}:{line}: from {module} import {name}: no such name")
    assert not missing, "\n".join(missing)


def test_the_walk_sees_function_level_imports():
    found = {(module, name) for _, _, module, name in _imports()}
    assert ("accelerate", "PartialState") in found and ("peft", "PeftModel") in found
