"""Camera names of a multi-camera xnet_node (`cameras` parameter), standard library only.

A camera name is a relative namespace (`front`, `stereo/left`): the node subscribes
`<name>/image` and `<name>/camera_info` and publishes every output under `<name>/`. The empty
name is the single camera of a node without `cameras`, whose topics have no prefix.
"""

from __future__ import annotations

import re

_CAMERA_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*$")


def camera_topic(camera: str, topic: str) -> str:
    """A node topic of one camera: `front/depth` ('' = the single-camera topic `depth`)."""
    return f"{camera}/{topic}" if camera else topic


def camera_label(camera: str) -> str:
    """How logs name a camera ('' = the only one)."""
    return f"camera {camera!r}" if camera else "camera"


def camera_name_problems(cameras: list[str]) -> list[str]:
    """What is wrong with a list of names: each a relative ROS name, all different."""
    problems = [f"{name!r} is not a relative topic namespace (letters, digits, _ and /, "
                "e.g. front)" for name in cameras if not _CAMERA_RE.match(name)]
    duplicates = sorted({n for n in cameras if cameras.count(n) > 1})
    if duplicates:
        problems.append(f"listed twice: {', '.join(duplicates)}")
    return problems
