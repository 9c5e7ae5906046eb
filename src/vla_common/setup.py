from setuptools import find_packages, setup

PACKAGE = "vla_common"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    package_data={PACKAGE: ["py.typed"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
    ],
    install_requires=["setuptools"],
    extras_require={"test": ["pytest"]},
    zip_safe=True,
    maintainer="VLA ROS maintainers",
    maintainer_email="maintainers@vla-ros.dev",
    description="The shared contracts every other package may use: embodiment manifest, dataset feature keys, robot joint conventions, the Policy / ActionChunk protocol, the atomic file write, and the node main() helper.",
    license="Apache-2.0",
)
