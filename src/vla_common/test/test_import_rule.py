"""vla_common is the bottom package: it imports none of ours, and none of its modules loads rclpy on import."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "vla_common"
OURS = {"vla_perception", "vla_policy", "vla_safety", "vla_collector", "vla_sim", "vla_bringup"}


def imported_top_level_names(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module.split(".")[0]


def test_imports_none_of_the_other_packages():
    offending = {
        path.name: sorted(OURS & set(imported_top_level_names(path))) for path in PACKAGE.glob("*.py")
    }
    assert not {k: v for k, v in offending.items() if v}


def test_importing_every_module_loads_no_rclpy():
    modules = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module('vla_common.' + m)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('rclpy', 'numpy', 'torch')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]", result.stdout
