"""Mapping from a user's bag: poses from /tf (chained through a static camera offset) give the same
frames and training targets as poses from a PoseStamped topic."""

import numpy as np
import pytest

from dsac_ros.buffer import cell_targets
from dsac_ros.data import read_frames, write_bag
from dsac_ros.data.rosbag import BagTopics
from dsac_ros.data.scenes import get_scene
from dsac_ros.geometry import invert_pose, make_pose, quaternion_xyzw_from_rotation, rotation_from_axis_angle
from dsac_ros.network import cell_centers_px

# Camera mounted 20 cm forward and 30 cm up on the robot, optical axis along base x (REP-103).
BASE_T_CAMERA = make_pose(np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]), [0.2, 0.0, 0.3])
BASE_T_CAMERA[:3, :3] = BASE_T_CAMERA[:3, :3] @ rotation_from_axis_angle([0.05, 0.0, 0.0])  # slight tilt


def _transform(ts, stamp_ns, parent, child, parent_T_child):
    t = ts.types
    q = quaternion_xyzw_from_rotation(parent_T_child[:3, :3])
    header = t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9,
                                                                            nanosec=stamp_ns % 10**9),
                                      frame_id=parent)
    return t["geometry_msgs/msg/TransformStamped"](
        header=header, child_frame_id=child,
        transform=t["geometry_msgs/msg/Transform"](
            translation=t["geometry_msgs/msg/Vector3"](x=parent_T_child[0, 3], y=parent_T_child[1, 3],
                                                       z=parent_T_child[2, 3]),
            rotation=t["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3])))


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    from rosbags.rosbag2 import Reader, StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    root = tmp_path_factory.mktemp("bags")
    frames = list(get_scene("tiny").render_frames("mapping", stride=8))
    write_bag(frames, root / "with_pose", topics=BagTopics())
    # Same images, but ground truth only as TF: map -> base_link (dynamic) and
    # base_link -> camera_optical_frame (static), as a SLAM system and a URDF publish them.
    write_bag(frames, root / "images_only", topics=BagTopics(pose=None, tf="/unused_tf"))
    ts = get_typestore(Stores.ROS2_HUMBLE)
    tf_type = "tf2_msgs/msg/TFMessage"
    with Reader(root / "images_only") as reader, \
            Writer(root / "with_tf", version=Writer.VERSION_LATEST, storage_plugin=StoragePlugin.MCAP) as writer:
        out = {}
        for connection in reader.connections:
            if connection.topic != "/unused_tf":
                out[connection.topic] = writer.add_connection(connection.topic, connection.msgtype, typestore=ts)
        tf = writer.add_connection("/tf", tf_type, typestore=ts)
        tf_static = writer.add_connection("/tf_static", tf_type, typestore=ts)
        start_ns = frames[0].stamp_ns
        static = ts.types[tf_type](transforms=[_transform(ts, start_ns, "base_link", "camera_optical_frame",
                                                          BASE_T_CAMERA)])
        writer.write(tf_static, start_ns - 1, ts.serialize_cdr(static, tf_type))
        for frame in frames:
            map_T_base = frame.world_T_cam @ invert_pose(BASE_T_CAMERA)
            message = ts.types[tf_type](transforms=[_transform(ts, frame.stamp_ns, "map", "base_link", map_T_base)])
            writer.write(tf, frame.stamp_ns, ts.serialize_cdr(message, tf_type))
        for connection, timestamp, data in reader.messages():
            if connection.topic in out:
                writer.write(out[connection.topic], timestamp, data)
    # Ground truth as nav_msgs/Odometry of base_link (a SLAM or mocap system's output), plus the
    # same static camera offset.
    odom_type = "nav_msgs/msg/Odometry"
    with Reader(root / "images_only") as reader, \
            Writer(root / "with_odometry", version=Writer.VERSION_LATEST, storage_plugin=StoragePlugin.MCAP) as writer:
        out = {c.topic: writer.add_connection(c.topic, c.msgtype, typestore=ts)
               for c in reader.connections if c.topic != "/unused_tf"}
        odom = writer.add_connection("/slam/odometry", odom_type, typestore=ts)
        tf_static = writer.add_connection("/tf_static", tf_type, typestore=ts)
        writer.write(tf_static, start_ns - 1, ts.serialize_cdr(static, tf_type))
        t = ts.types
        for frame in frames:
            transform = _transform(ts, frame.stamp_ns, "map", "base_link", frame.world_T_cam @ invert_pose(BASE_T_CAMERA))
            pose = t["geometry_msgs/msg/Pose"](
                position=t["geometry_msgs/msg/Point"](x=transform.transform.translation.x,
                                                      y=transform.transform.translation.y,
                                                      z=transform.transform.translation.z),
                orientation=transform.transform.rotation)
            message = t[odom_type](
                header=transform.header, child_frame_id="base_link",
                pose=t["geometry_msgs/msg/PoseWithCovariance"](pose=pose, covariance=np.zeros(36)),
                twist=t["geometry_msgs/msg/TwistWithCovariance"](
                    twist=t["geometry_msgs/msg/Twist"](linear=t["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0),
                                                       angular=t["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.0)),
                    covariance=np.zeros(36)))
            writer.write(odom, frame.stamp_ns, ts.serialize_cdr(message, odom_type))
        for connection, timestamp, data in reader.messages():
            if connection.topic in out:
                writer.write(out[connection.topic], timestamp, data)
    return frames, root


def test_odometry_of_the_body_chained_to_the_camera_gives_the_camera_poses(bags):
    _, root = bags
    from_pose = list(read_frames(root / "with_pose"))
    from_odometry = list(read_frames(root / "with_odometry", pose_topic="/slam/odometry"))
    assert len(from_odometry) == len(from_pose)
    for a, b in zip(from_pose, from_odometry):
        np.testing.assert_allclose(b.world_T_cam, a.world_T_cam, atol=1e-6)


def test_unsupported_ground_truth_type_is_a_clear_error(bags):
    _, root = bags
    with pytest.raises(ValueError, match="ground-truth topic '/camera/camera_info' has type"):
        list(read_frames(root / "with_pose", pose_topic="/camera/camera_info"))


def test_tf_chain_through_static_offset_gives_the_pose_topic_poses(bags):
    frames, root = bags
    from_pose = list(read_frames(root / "with_pose"))
    from_tf = list(read_frames(root / "with_tf", pose_topic=None, tf_parent="map", tf_child="camera_optical_frame"))
    assert len(from_pose) == len(from_tf) == len(frames)
    for a, b in zip(from_pose, from_tf):
        assert a.stamp_ns == b.stamp_ns
        np.testing.assert_allclose(b.world_T_cam, a.world_T_cam, atol=1e-6)
        pixels = cell_centers_px(20, 15, (160, 120), (160, 120))
        np.testing.assert_allclose(cell_targets(b.depth_m, b.world_T_cam, b.intrinsics, pixels),
                                   cell_targets(a.depth_m, a.world_T_cam, a.intrinsics, pixels), atol=1e-5)


def test_frames_without_a_tf_path_to_the_camera_have_no_pose(bags):
    _, root = bags
    frames = list(read_frames(root / "with_tf", pose_topic=None, tf_parent="map", tf_child="camera_link"))
    assert frames and all(frame.world_T_cam is None for frame in frames)


@pytest.mark.usefixtures("one_torch_thread")
def test_map_verb_maps_a_bag_whose_poses_come_only_from_tf(bags, tmp_path):
    from dsac_ros.cli import main as cli_main
    from dsac_ros.mapfile import load_map

    _, root = bags
    common = ["--minutes", "0.1", "--no-end-to-end", "--threads", "1", "--quiet", "--pose-topic", "none",
              "--tf-parent", "map"]
    assert cli_main(["map", str(root / "with_tf"), "--out", str(tmp_path / "tf.pt"),
                     "--tf-child", "camera_optical_frame", *common]) == 0
    assert load_map(tmp_path / "tf.pt").training["data"]["mapping_frames"] > 0
    # A camera frame TF cannot reach: no poses, so mapping refuses with a reason instead of a map.
    assert cli_main(["map", str(root / "with_tf"), "--out", str(tmp_path / "none.pt"),
                     "--tf-child", "camera_link", *common]) != 0
    assert not (tmp_path / "none.pt").exists()
