"""Several cameras in one pass of `xnet bag infer|eval`: names, calibrations, batches.

Each `--image-topic` is a camera. Its name is the topic's namespace (`/front/image_raw` ->
`front`), or the whole topic name where namespaces repeat; with one image topic the name is ''
(outputs without a camera prefix, as before). Its camera infos come from `--camera-info-topic`
(one per image topic, in order) or the image topic's sibling `camera_info`. Frames are read in
bag order and grouped into batches of at most one frame per camera (`FrameBatcher`), so the
model runs one forward pass per batch, as the node does.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Sequence
from typing import Any

from ..cameras import camera_name_problems
from ..pipeline import stamp_ns
from ..rectify import CameraCalibration
from .io import BagError, BagReader, BagReadError, Topic
from .messages import CAMERA_INFO

log = logging.getLogger(__name__)


def as_list(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def camera_names(image_topics: Sequence[str]) -> list[str]:
    """'' for a single topic; else each topic's namespace, or the topic itself (without the
    leading '/') when namespaces repeat or are empty."""
    if len(image_topics) == 1:
        return [""]
    if len(set(image_topics)) != len(image_topics):
        raise BagError(f"--image-topic given twice: {', '.join(image_topics)}")
    parents = [t.strip("/").rpartition("/")[0] for t in image_topics]
    if all(parents) and len(set(parents)) == len(parents):
        names = parents
    else:
        names = [t.strip("/") for t in image_topics]
    problems = camera_name_problems(names)
    if problems:
        raise BagError(f"cannot name the cameras of {', '.join(image_topics)}: "
                       f"{'; '.join(problems)}")
    return names


class CameraInfoIndex:
    """Calibrations by header stamp: the latest at or before a stamp, else the nearest after."""

    def __init__(self) -> None:
        self._entries: list[tuple[int, Any]] = []
        self._stamps: list[int] = []

    def add(self, stamp: int, calibration: Any) -> None:
        self._entries.append((stamp, calibration))
        self._stamps = []  # re-sorted on the next lookup

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, stamp: int) -> Any:
        if not self._entries:
            return None
        if not self._stamps:
            self._entries.sort(key=lambda entry: entry[0])
            self._stamps = [s for s, _ in self._entries]
        i = bisect.bisect_right(self._stamps, stamp)
        return self._entries[i - 1 if i else 0][1]


def load_camera_infos(bag: BagReader, topic: str, rectify: str = "auto"
                      ) -> tuple[CameraInfoIndex, str | None]:
    """All usable camera infos on `topic` (a pre-pass: they are small), and why some were not
    (uncalibrated, or distortion `rectify: auto` cannot undo)."""
    index, problem = CameraInfoIndex(), None
    try:
        for _, _, raw in bag.messages([topic]):
            msg = bag.deserialize(raw, CAMERA_INFO)
            try:
                calib = CameraCalibration.from_camera_info(msg)
                if rectify == "auto":
                    calib.check_rectifiable()
                index.add(stamp_ns(msg.header.stamp), calib)
            except ValueError as exc:
                problem = str(exc)
    except BagReadError:
        pass  # the main pass meets the same damage and reports it
    return index, problem


def camera_info_topic(bag: BagReader, image: Topic, given: str | None
                      ) -> tuple[str | None, str]:
    """The camera info topic of an image topic (`given`, else its sibling `camera_info` if it
    has messages), or None and why not."""
    if given:
        return bag.topic(given, [CAMERA_INFO], "camera_info").name, ""
    name = image.name.rsplit("/", 1)[0] + "/camera_info"
    sibling = bag.topics.get(name)
    if sibling is None or sibling.msgtype != CAMERA_INFO or sibling.count == 0:
        return None, f"no --camera-info-topic given and no {CAMERA_INFO} on {name}"
    log.info("using camera info from %s", name)
    return name, ""


class FrameBatcher:
    """Consecutive frames into batches: at most one frame per camera and `size` frames."""

    def __init__(self, size: int):
        self.size = max(1, size)
        self._items: list[Any] = []
        self._cameras: set[str] = set()

    def add(self, item: Any, camera: str) -> list[list[Any]]:
        """The batches complete once `item` is in (0, 1 or 2)."""
        ready = []
        if camera in self._cameras:  # the camera's next frame: run what we have first
            ready.append(self.take())
        self._items.append(item)
        self._cameras.add(camera)
        if len(self._items) >= self.size:
            ready.append(self.take())
        return ready

    def take(self) -> list[Any]:
        items, self._items, self._cameras = self._items, [], set()
        return items

    def __len__(self) -> int:
        return len(self._items)
