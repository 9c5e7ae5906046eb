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


# What each module may load on import: nothing heavy, except the action chunk's numpy.
MAY_LOAD = {"policy": {"numpy"}}


def heavy_modules_loaded_by(module):
    code = (
        "import importlib, sys\n"
        f"importlib.import_module('vla_common.{module}')\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'rclpy', 'numpy', 'torch'}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return set(ast.literal_eval(result.stdout.strip()))


def test_importing_every_module_loads_no_rclpy_nor_torch_and_numpy_only_for_the_action_chunk():
    modules = sorted(p.stem for p in PACKAGE.glob("*.py"))
    unexpected = {m: sorted(heavy_modules_loaded_by(m) - MAY_LOAD.get(m, set())) for m in modules}
    assert {m: v for m, v in unexpected.items() if v} == {}
