"""xnet_ros: ROS 2 node and helpers for the xNet depth + semantics network.

When working from the source tree, the generated interfaces (``xnet_ros.msg``) live in a second
``xnet_ros/`` directory: the ROS build installs them to
``install/lib/pythonX.Y/site-packages/xnet_ros`` (``source tools/ros_env.sh`` puts that on
PYTHONPATH). Extending ``__path__`` with every ``xnet_ros/`` directory on sys.path lets
``xnet_ros.msg`` and the source modules resolve together, the source tree first. In a colcon
install both are one directory and this is a no-op. Keep this file free of heavy imports (rclpy).
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
