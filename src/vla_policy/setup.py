import os

from setuptools import find_packages, setup

PACKAGE = "vla_policy"


def tree(folder: str) -> list[tuple[str, list[str]]]:
    """Install every file under folder (config/, launch/, checkpoints/) keeping its subfolders."""
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
        *tree("checkpoints"),
    ],
    install_requires=["setuptools"],
    extras_require={"test": ["pytest"]},
    zip_safe=True,
    maintainer="VLA ROS maintainers",
    maintainer_email="maintainers@vla-ros.dev",
    description="The VLA policy: native model, training, evaluation, backends (native, Hugging Face, remote) and the asynchronous chunked policy node.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "policy_node = vla_policy.policy_node:main",
            "vla-train = vla_policy.train:main",
            "vla-eval = vla_policy.evaluate:main",
            "vla-serve = vla_policy.serve:main",
            "vla-dagger = vla_policy.dagger:main",
            "vla-train-locator = vla_policy.locator:main",
            "vla-train-held = vla_policy.held_referents:main",
        ],
    },
)
