"""launch_testing test of localize.launch.py: runs where the ROS 2 launch packages are installed.

Here (PyPI wheels, no `launch`) it is reported as skipped with the reason; test_package.py
checks the file compiles and names the installed executable and parameter file.
"""

import os
import unittest

import pytest

launch = pytest.importorskip("launch", reason="ROS 2 `launch` is not installed (PyPI-wheel ROS); "
                             "runs on machines with a full ROS 2 distribution")
launch_ros = pytest.importorskip("launch_ros", reason="ROS 2 `launch_ros` is not installed")
launch_testing = pytest.importorskip("launch_testing", reason="ROS 2 `launch_testing` is not installed")

from ament_index_python.packages import get_package_share_directory  # noqa: E402
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402


@pytest.mark.launch_test
def generate_test_description():
    launch_file = os.path.join(get_package_share_directory("dsac_ros"), "launch", "localize.launch.py")
    include = IncludeLaunchDescription(PythonLaunchDescriptionSource(launch_file),
                                       launch_arguments={"device": "cpu"}.items())
    return launch.LaunchDescription([include, launch_testing.actions.ReadyToTest()])


class TestLocalizerStarts(unittest.TestCase):
    def test_node_reports_status(self, proc_output):
        # Without a map the node must come up and say so instead of dying.
        proc_output.assertWaitFor("NO_MODEL", timeout=30, stream="stderr")


@launch_testing.post_shutdown_test()
class TestLocalizerExit(unittest.TestCase):
    def test_exit_code(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info, allowable_exit_codes=[0, -2, -15])
