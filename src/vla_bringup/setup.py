import os

from setuptools import find_packages, setup

PACKAGE = "vla_bringup"


def tree(folder: str) -> list[tuple[str, list[str]]]:
    """Install every file under folder (config/, launch/) keeping its subfolders."""
    return [
        (os.path.join("share", PACKAGE, root), [os.path.join(root, f) for f in files])
        for root, _, files in os.walk(folder)
        if files
    ]


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        *tree("config"),
        *tree("launch"),
    ],
    install_requires=["setuptools"],
    extras_require={"test": ["pytest"]},
    zip_safe=True,
    maintainer="VLA ROS maintainers",
    maintainer_email="maintainers@vla-ros.dev",
    description="Launch files, robot profiles, the bringup plan and the vla-up runner for machines without ros2 launch.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "vla-up = vla_bringup.runner:main",
            "vla-demo = vla_bringup.demo:main",
        ],
    },
)
