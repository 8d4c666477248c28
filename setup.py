"""pip install of the two Python packages (the ROS build itself is CMakeLists.txt)."""

from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "xnet_ros"
HERE = Path(__file__).resolve().parent

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=["xnet_model", "xnet_model.*", "xnet_ros", "xnet_ros.*"]),
    package_data={"xnet_model": ["assets/*", "assets/**/*"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.rviz")
         + glob("config/*.xml")),
    ],
    python_requires=">=3.10",
    install_requires=["numpy", "torch", "timm", "safetensors", "pyyaml", "opencv-python-headless"],
    extras_require={
        "bag": ["rosbags", "matplotlib", "tqdm"],
        "onnx": ["onnx", "onnxscript", "onnxruntime"],
        "tensorrt": ["torch-tensorrt", "nvidia-modelopt[torch]"],
    },
    zip_safe=False,
    maintainer="xnet_ros maintainers",
    description="xNet dense prediction (metric depth + semantics) for ROS 2",
    license="Apache-2.0",
    # one list for pip and for the CMake (colcon) install: resource/entry_points.txt
    entry_points=(HERE / "resource" / "entry_points.txt").read_text(),
)
