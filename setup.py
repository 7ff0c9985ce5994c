"""pip install . : the dsac_ros library and the `dsac-ros` command, without ROS.

ROS 2 users build with colcon instead (CMakeLists.txt, package.xml), which also generates
the dsac_ros/msg interfaces and installs the `localizer` node.
"""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def requirements() -> list[str]:
    lines = (HERE / "requirements.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


setup(
    name="dsac_ros",
    version="0.1.0",
    description="Camera relocalisation with scene coordinate regression and DSAC, for ROS 2",
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="BSD-3-Clause",
    python_requires=">=3.10",
    packages=find_packages(include=["dsac_ros", "dsac_ros.*"]),
    package_data={"dsac_ros": ["assets/*"]},
    install_requires=requirements(),
    entry_points={"console_scripts": ["dsac-ros = dsac_ros.cli:main"]},
)
