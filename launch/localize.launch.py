"""Start the dsac_ros localizer.

ros2 launch dsac_ros localize.launch.py map:=/path/to/map.pt \
    image:=/camera/image_raw camera_info:=/camera/camera_info [namespace:=robot1] [use_sim_time:=true]
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = "dsac_ros"
EXECUTABLE = "localizer"
PARAMS_FILE = "localize.yaml"


def generate_launch_description():
    default_params = os.path.join(get_package_share_directory(PACKAGE), "config", PARAMS_FILE)
    arguments = [
        DeclareLaunchArgument("map", default_value="", description="map file (.pt) made by `dsac-ros map`"),
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="YAML file with the localizer's parameters"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="use /clock (true when replaying a bag)"),
        DeclareLaunchArgument("image", default_value="/camera/image_raw", description="image topic"),
        DeclareLaunchArgument("camera_info", default_value="/camera/camera_info",
                              description="CameraInfo topic"),
        DeclareLaunchArgument("depth", default_value="/camera/depth/image_raw",
                              description="depth image topic (RGB-D mode)"),
        DeclareLaunchArgument("device", default_value="auto", description="auto, cpu, cuda or cuda:N"),
        DeclareLaunchArgument("log_level", default_value="info", description="ROS log level"),
    ]
    localizer = Node(
        package=PACKAGE,
        executable=EXECUTABLE,
        name="localizer",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        parameters=[
            LaunchConfiguration("params_file"),
            {
                "map_path": LaunchConfiguration("map"),
                "device": LaunchConfiguration("device"),
                "use_sim_time": LaunchConfiguration("use_sim_time"),
            },
        ],
        remappings=[
            ("image", LaunchConfiguration("image")),
            ("image/compressed", [LaunchConfiguration("image"), "/compressed"]),
            ("camera_info", LaunchConfiguration("camera_info")),
            ("depth", LaunchConfiguration("depth")),
        ],
        arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level")],
    )
    return LaunchDescription(arguments + [localizer])
