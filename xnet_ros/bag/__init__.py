"""Offline rosbag tools (`xnet bag infer|eval`): pure Python via `rosbags`, no ROS install."""

from .io import BagError, BagReader, BagReadError, BagWriter

__all__ = ["BagError", "BagReadError", "BagReader", "BagWriter"]
