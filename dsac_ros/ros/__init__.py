"""The ROS 2 adapter: the only part of dsac_ros that imports rclpy and message types.

node.py         the `localizer` node (`ros2 run dsac_ros localizer`)
conversions.py  messages <-> numpy / Intrinsics / poses / stamps
tf_buffer.py    a small TF buffer (tf2_ros is not required)
params.py       the node's parameters: declarations, descriptors, validation
"""
