"""The demo's camera: xnet_model.data.synthetic's walk through a room, published as `image` +
`camera_info` (rgb8, reliable, keep last 5) with the current time as stamp."""

from __future__ import annotations

import itertools
import time
from typing import Any

from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from .conversions import array_to_image_fields
from .geometry import Intrinsics
from .pipeline import stamp_ns
from .ros_messages import camera_info_msg, image_msg


def synthetic_frames(n: int, height: int, width: int, seed: int = 0) -> list[Any]:
    """`n` SyntheticFrames (rgb, depth, labels, K) of the synthetic camera's walk."""
    from xnet_model.data.synthetic import SyntheticCamera

    return list(itertools.islice(SyntheticCamera(height, width, seed=seed), n))


class CameraPublisher:
    """Publishes `frames` in order on a node's `image` and `camera_info` topics and remembers
    which frame each header stamp belongs to (`index_of`)."""

    def __init__(self, node: Any, frames: list[Any], frame_id: str):
        self.node, self.frames, self.frame_id = node, frames, frame_id
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self.image_pub = node.create_publisher(Image, "image", qos)
        self.info_pub = node.create_publisher(CameraInfo, "camera_info", qos)
        self.index_of: dict[int, int] = {}  # header stamp (ns) -> frame index
        self.next = 0  # frames published
        self.t_first = self.t_end = 0.0  # perf_counter: first image, all outputs recorded
        self._header: Header | None = None

    @property
    def done(self) -> bool:
        return self.next >= len(self.frames)

    def publish_info(self) -> None:
        """camera_info of the next frame, with a new stamp that its image will share."""
        f = self.frames[self.next]
        self._header = Header(stamp=self.node.get_clock().now().to_msg(), frame_id=self.frame_id)
        k, (h, w) = f.K, f.rgb.shape[:2]
        intrinsics = Intrinsics(float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2]),
                                w, h)
        self.info_pub.publish(camera_info_msg(self._header, intrinsics.to_camera_info_fields()))

    def publish_image(self) -> None:
        """The next frame's image, with the stamp of the last camera_info."""
        self.index_of[stamp_ns(self._header.stamp)] = self.next
        rgb = self.frames[self.next].rgb
        self.image_pub.publish(image_msg(self._header, array_to_image_fields(rgb, "rgb8")))
        self.next += 1
        self.t_first = self.t_first or time.perf_counter()

    def publish_next(self) -> None:
        """Timer callback: camera_info + image of the next frame (nothing after the last)."""
        if not self.done:
            self.publish_info()
            self.publish_image()
