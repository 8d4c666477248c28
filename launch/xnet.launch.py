"""Launch xnet_node (lifecycle node, activates itself) and optionally RViz.

    ros2 launch xnet_ros xnet.launch.py image_topic:=/camera/image_raw \\
        camera_info_topic:=/camera/camera_info namespace:=front use_rviz:=true

Arguments (see xnet_ros/launch_config.py, which holds the wiring the tests check):
  params_file        parameter YAML (default: share/xnet_ros/config/xnet.yaml)
  model              model directory; overrides the file's `model` when non-empty
  namespace          namespace of the node and its topics
  image_topic        input image topic (`image/compressed` follows it with /compressed)
  camera_info_topic  input camera_info topic
  use_rviz           start rviz2 with config/xnet.rviz (topics moved into the namespace)
  log_level          node log level
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription
from xnet_ros import launch_config as lc


def _setup(context, *args, **kwargs):
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    share = get_package_share_directory(lc.PACKAGE)
    params_file = arg("params_file") or os.path.join(share, lc.CONFIG_DIR, lc.PARAMS_FILE)
    namespace = arg("namespace").strip("/")
    actions = [
        LifecycleNode(
            package=lc.PACKAGE,
            executable=lc.EXECUTABLE,
            name=lc.NODE,
            namespace=namespace,
            parameters=lc.node_parameters(params_file, arg("model")),
            remappings=lc.node_remappings(arg("image_topic"), arg("camera_info_topic")),
            arguments=["--ros-args", "--log-level", arg("log_level")],
            output="screen",
            emulate_tty=True,
        )
    ]
    if lc.is_true(arg("use_rviz")):
        actions.append(Node(
            package="rviz2",
            executable="rviz2",
            name="rviz2",
            arguments=["-d", os.path.join(share, lc.CONFIG_DIR, lc.RVIZ_FILE)],
            remappings=lc.rviz_remappings(namespace),
            output="screen",
        ))
    return actions


def generate_launch_description():
    defaults = {"params_file": PathJoinSubstitution(
        [FindPackageShare(lc.PACKAGE), lc.CONFIG_DIR, lc.PARAMS_FILE])}
    return LaunchDescription(
        [DeclareLaunchArgument(a.name, default_value=defaults.get(a.name, a.default),
                               description=a.description)
         for a in lc.LAUNCH_ARGS]
        + [OpaqueFunction(function=_setup)]
    )
