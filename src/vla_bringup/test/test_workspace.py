"""Workspace quality gates: lint and format, strict typing of the safety package, and package consistency.

Consistency means: every console script a setup.py declares exists as a module with a ``main``; every ROS
package a module imports (anything in the ament index, our own packages included) is declared in that
package's package.xml; every package installs its resource marker and setup.cfg script dirs.
"""

import ast
import configparser
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SRC = ROOT / "src"
PACKAGES = sorted(p.name for p in SRC.iterdir() if (p / "package.xml").is_file())
TOOL_DIR = Path(sys.executable).parent


def tool(name):
    path = TOOL_DIR / name
    return str(path) if path.exists() else shutil.which(name)


def test_all_seven_packages_are_present():
    expected = [
        "vla_common",
        "vla_perception",
        "vla_policy",
        "vla_safety",
        "vla_collector",
        "vla_sim",
        "vla_bringup",
    ]
    assert sorted(expected) == PACKAGES


@pytest.mark.parametrize("args", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_ruff(args):
    ruff = tool("ruff")
    if ruff is None:
        pytest.fail("ruff is not installed: scripts/setup.sh installs it")
    targets = [str(SRC), *([str(ROOT / "bench")] if (ROOT / "bench").is_dir() else [])]
    result = subprocess.run(
        [ruff, *args, *targets], check=False, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_on_vla_safety():
    mypy = tool("mypy")
    if mypy is None:
        pytest.fail("mypy is not installed: scripts/setup.sh installs it")
    result = subprocess.run(
        [mypy, "--strict", "--no-error-summary", "--cache-dir", str(ROOT / "build" / "mypy_cache"),
         str(SRC / "vla_safety" / "vla_safety")],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def declared_dependencies(package):
    root = ET.parse(SRC / package / "package.xml").getroot()
    tags = ("depend", "exec_depend", "build_depend", "test_depend")
    return {e.text.strip() for tag in tags for e in root.iter(tag) if e.text}


def console_scripts(package):
    tree = ast.parse((SRC / package / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "console_scripts":
                    return [ast.literal_eval(e) for e in value.elts]
    return []


@pytest.mark.parametrize("package", PACKAGES)
def test_console_scripts_exist(package):
    for entry in console_scripts(package):
        name, target = (s.strip() for s in entry.split("=", 1))
        module, func = target.split(":")
        path = SRC / package / (module.replace(".", "/") + ".py")
        assert path.is_file(), f"{package}: console script {name} points at missing module {module}"
        defined = {n.name for n in ast.parse(path.read_text()).body if isinstance(n, ast.FunctionDef)}
        assert func in defined, f"{package}: {module} has no function {func} for console script {name}"


def ros_packages():
    from ament_index_python.packages import get_packages_with_prefixes

    return set(get_packages_with_prefixes()) | set(PACKAGES)


@pytest.mark.parametrize("package", PACKAGES)
def test_imported_ros_packages_are_declared(package):
    known = ros_packages()
    declared = declared_dependencies(package)
    missing = {}
    for path in (SRC / package).rglob("*.py"):
        if "test" in path.relative_to(SRC / package).parts[:1] or path.name == "setup.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top in known and top != package and top not in declared:
                    missing.setdefault(top, []).append(str(path.relative_to(SRC)))
    assert not missing, f"{package}/package.xml does not declare {missing}"


@pytest.mark.parametrize("package", PACKAGES)
def test_package_layout(package):
    root = SRC / package
    assert (root / "resource" / package).is_file()
    assert ET.parse(root / "package.xml").getroot().get("format") == "3"
    cfg = configparser.ConfigParser()
    cfg.read(root / "setup.cfg")
    assert cfg["develop"]["script_dir"] == f"$base/lib/{package}"
    assert cfg["install"]["install_scripts"] == f"$base/lib/{package}"
