"""Launch xnet_node (lifecycle node, activates itself) and optionally RViz.

    ros2 launch xnet_ros xnet.launch.py image_topic:=/camera/image_raw \\
        camera_info_topic:=/camera/camera_info namespace:=front use_rviz:=true
    ros2 launch xnet_ros xnet.launch.py cameras:=front,left \\
        image_topic:=/{camera}/image_raw camera_info_topic:=/{camera}/camera_info

Arguments (`--show-args`; xnet_ros/launch_config.py holds them and all the wiring):
  params_file        parameter YAML (default: share/xnet_ros/config/xnet.yaml); missing = error
  model              model directory; overrides the file's `model` when non-empty
  namespace          namespace of the node and its topics
  cameras            camera names, e.g. front,left: one node for all (topics <camera>/...)
  image_topic        input image topic (`image/compressed` follows it with /compressed); with
                     cameras, {camera} is replaced by each name, e.g. /{camera}/image_raw
  camera_info_topic  input camera_info topic (with cameras: as image_topic)
  use_rviz           start rviz2 with config/xnet.rviz (skipped with a warning without rviz2)
  log_level          node log level

Imports only the launch packages and xnet_ros.launch_config (standard library): no numpy,
OpenCV or torch in the process that runs `ros2 launch`.
"""

import sys

import launch.logging
from ament_index_python.packages import (
    PackageNotFoundError,
    get_package_prefix,
    get_package_share_directory,
)
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node

from launch import LaunchDescription
from xnet_ros import launch_config as lc


def _installed(package: str) -> bool:
    try:
        get_package_prefix(package)
    except PackageNotFoundError:
        return False
    return True


def _setup(context, *args, **kwargs):
    values = {name: LaunchConfiguration(name).perform(context) for name in lc.LAUNCH_ARG_NAMES}
    # raises LaunchConfigError (e.g. a missing params_file) before anything is started
    plan = lc.plan(values, get_package_share_directory(lc.PACKAGE),
                   package_installed=_installed, stdout_is_tty=sys.stdout.isatty())
    logger = launch.logging.get_logger(lc.LAUNCH_FILE)
    for warning in plan.warnings:
        logger.warning(warning)
    actions = [LifecycleNode(**plan.node)]
    if plan.rviz is not None:
        actions.append(Node(**plan.rviz))
    return actions


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(a.name, default_value=a.default, description=a.description)
         for a in lc.LAUNCH_ARGS]
        + [OpaqueFunction(function=_setup)]
    )
