"""Start the dsac_ros localizer.

ros2 launch dsac_ros localize.launch.py map:=/path/to/map.pt \
    image:=/camera/image_raw camera_info:=/camera/camera_info [namespace:=robot1] [use_sim_time:=true]
    [lifecycle:=true [autostart:=false]]

lifecycle:=true runs the managed node (dsac_ros/ros/lifecycle_node.py). With autostart:=true (the
default) this launch configures and then activates it, as nav2's lifecycle manager would; with
autostart:=false it waits, unconfigured, for a lifecycle manager or `ros2 lifecycle set`.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, LogInfo, RegisterEventHandler
from launch.conditions import IfCondition, UnlessCondition
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from lifecycle_msgs.msg import Transition

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
        DeclareLaunchArgument("backend", default_value="auto",
                              description="encoder runtime: auto (onnxruntime on the CPU, torch on CUDA), torch or onnxruntime"),
        DeclareLaunchArgument("log_level", default_value="info", description="ROS log level"),
        DeclareLaunchArgument("lifecycle", default_value="false",
                              description="run the lifecycle (managed) node: configure loads the map, activate starts it"),
        DeclareLaunchArgument("autostart", default_value="true",
                              description="with lifecycle:=true, configure and activate at launch"),
    ]
    lifecycle = LaunchConfiguration("lifecycle")
    common = dict(
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
                "backend": LaunchConfiguration("backend"),
                "use_sim_time": LaunchConfiguration("use_sim_time"),
            },
        ],
        remappings=[
            ("image", LaunchConfiguration("image")),
            ("image/compressed", [LaunchConfiguration("image"), "/compressed"]),
            ("camera_info", LaunchConfiguration("camera_info")),
            ("depth", LaunchConfiguration("depth")),
        ],
    )
    log_level = ["--ros-args", "--log-level", LaunchConfiguration("log_level")]
    localizer = Node(arguments=log_level, condition=UnlessCondition(lifecycle), **common)
    managed = LifecycleNode(arguments=["--lifecycle"] + log_level, condition=IfCondition(lifecycle), **common)
    autostart = IfCondition(PythonExpression(["'", lifecycle, "'.lower() == 'true' and '",
                                              LaunchConfiguration("autostart"), "'.lower() == 'true'"]))
    configure = EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(managed),
                                            transition_id=Transition.TRANSITION_CONFIGURE), condition=autostart)
    activate_when_configured = RegisterEventHandler(OnStateTransition(
        target_lifecycle_node=managed, start_state="configuring", goal_state="inactive",
        entities=[LogInfo(msg="localizer configured (map loaded): activating"),
                  EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(managed),
                                              transition_id=Transition.TRANSITION_ACTIVATE))]),
        condition=autostart)
    return LaunchDescription(arguments + [localizer, activate_when_configured, managed, configure])
