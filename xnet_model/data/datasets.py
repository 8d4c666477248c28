"""Datasets for the public layouts: BTS-style depth split files (NYU-Depth-V2, KITTI Eigen),
ADE20K (ADEChallengeData2016) and Cityscapes (gtFine labelTrainIds).

Every sample is a dict: 'image' (HxWx3 uint8 RGB, or whatever `transform` makes of it),
optional 'depth' (HxW float32 metres, 0 = invalid) and 'labels' (HxW uint8, 255 = ignore), and
'meta' (str / float / int values only, so torch's default_collate can batch it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from torch.utils.data import Dataset

from xnet_model.data.transforms import KBCrop

Sample = dict[str, Any]
Transform = Callable[[Sample], Sample]

NYU_DEPTH_SCALE = 1000.0  # uint16 PNG value / scale = metres
KITTI_DEPTH_SCALE = 256.0
CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)


class DatasetError(FileNotFoundError):
    """A dataset file is missing or a split file line cannot be used."""


def read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetError(f"cannot read image {path} (missing or not an image)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_depth(path: Path, depth_scale: float, max_depth: float | None = None) -> np.ndarray:
    """uint16 PNG -> float32 metres; values above `max_depth` become 0 (invalid)."""
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise DatasetError(f"cannot read depth map {path} (missing or not an image)")
    if raw.ndim != 2:
        raise DatasetError(f"depth map {path} has shape {raw.shape}; expected one channel")
    depth = raw.astype(np.float32) / np.float32(depth_scale)
    if max_depth is not None:
        depth[depth > max_depth] = 0.0
    return depth


def read_labels(path: Path) -> np.ndarray:
    labels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if labels is None:
        raise DatasetError(f"cannot read label map {path} (missing or not an image)")
    if labels.ndim != 2:
        raise DatasetError(f"label map {path} has shape {labels.shape}; expected one channel")
    return labels


@dataclass(frozen=True)
class SplitEntry:
    line_number: int  # 1-based, as an editor shows it
    rgb_path: Path
    depth_path: Path | None  # None: the split gives no ground truth ('None')
    focal: float  # NaN when the line has no focal column


class DepthSplitDataset(Dataset):
    """Images + depth listed by a BTS split file: `rgb_path depth_path [focal]` per line.

    rgb paths are relative to `data_root`, depth paths to `gt_root` (default `data_root`);
    depth_path 'None' means no ground truth. Depth = PNG / depth_scale metres, values above
    `max_depth` set to 0. `kb_crop` applies the KITTI benchmark crop before `transform`.
    `eval_crop` records the metric crop ('garg', 'eigen_nyu', ...) for evaluation code.
    Missing files raise DatasetError naming the split file and line: lazily in __getitem__,
    or for every line at once with `validate()`. With `require_ground_truth`, 'None' lines
    (BTS's KITTI `eigen_test_files_with_gt.txt` has frames without annotated depth) are left
    out of the samples and listed in `without_ground_truth` instead, for training and scoring.
    """

    def __init__(self, data_root: str | Path, gt_root: str | Path | None,
                 split_file: str | Path, depth_scale: float, max_depth: float,
                 transform: Transform | None = None, kb_crop: bool = False,
                 eval_crop: str | None = None, require_ground_truth: bool = False) -> None:
        self.data_root = Path(data_root)
        self.gt_root = Path(gt_root) if gt_root is not None else self.data_root
        self.split_file = Path(split_file)
        self.depth_scale = float(depth_scale)
        self.max_depth = float(max_depth)
        self.transform = transform
        self.kb_crop = kb_crop
        self.eval_crop = eval_crop
        entries = self._parse_split()
        self.without_ground_truth: list[SplitEntry] = []
        if require_ground_truth:
            self.without_ground_truth = [e for e in entries if e.depth_path is None]
            entries = [e for e in entries if e.depth_path is not None]
            if not entries:
                raise DatasetError(f"split file {self.split_file} lists no sample with ground "
                                   f"truth ({len(self.without_ground_truth)} 'None' lines)")
        self.entries = entries

    def _where(self, entry: SplitEntry) -> str:
        return f"{self.split_file}, line {entry.line_number}"

    def _parse_split(self) -> list[SplitEntry]:
        if not self.split_file.is_file():
            raise DatasetError(f"split file not found: {self.split_file}")
        entries = []
        for number, line in enumerate(self.split_file.read_text().splitlines(), start=1):
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            where = f"{self.split_file}, line {number}"
            if len(fields) not in (2, 3):
                raise DatasetError(
                    f"{where}: expected 'rgb_path depth_path [focal]', got {line.strip()!r}"
                )
            try:
                focal = float(fields[2]) if len(fields) == 3 else math.nan
            except ValueError:
                raise DatasetError(f"{where}: focal {fields[2]!r} is not a number") from None
            # BTS NYU splits write paths with a leading '/' relative to the data root.
            depth = None if fields[1] == "None" else self.gt_root / fields[1].lstrip("/")
            entries.append(SplitEntry(number, self.data_root / fields[0].lstrip("/"), depth,
                                      focal))
        if not entries:
            raise DatasetError(f"split file {self.split_file} lists no samples")
        return entries

    def _check(self, entry: SplitEntry) -> None:
        if not entry.rgb_path.is_file():
            raise DatasetError(f"{self._where(entry)}: rgb file not found: {entry.rgb_path}")
        if entry.depth_path is not None and not entry.depth_path.is_file():
            raise DatasetError(f"{self._where(entry)}: depth file not found: {entry.depth_path}")

    def validate(self) -> None:
        """Check every line's files now; one DatasetError listing all the missing ones."""
        problems = []
        for entry in self.entries:
            try:
                self._check(entry)
            except DatasetError as exc:
                problems.append(str(exc))
        if problems:
            shown = "\n  ".join(problems[:20])
            more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
            raise DatasetError(f"{len(problems)} missing file(s):\n  {shown}{more}")

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> Sample:
        entry = self.entries[index]
        self._check(entry)
        sample: Sample = {"image": read_rgb(entry.rgb_path)}
        if entry.depth_path is not None:
            sample["depth"] = read_depth(entry.depth_path, self.depth_scale, self.max_depth)
            if sample["depth"].shape != sample["image"].shape[:2]:
                raise DatasetError(
                    f"{self._where(entry)}: depth {sample['depth'].shape} and image "
                    f"{sample['image'].shape[:2]} sizes differ"
                )
        sample["meta"] = {
            "rgb_path": str(entry.rgb_path),
            "depth_path": str(entry.depth_path) if entry.depth_path is not None else "",
            "focal": entry.focal,
            "split_line": entry.line_number,
            "index": index,
        }
        if self.kb_crop:
            sample = KBCrop()(sample)
        return self.transform(sample) if self.transform is not None else sample


def nyu_depth(data_root: str | Path, gt_root: str | Path | None, split_file: str | Path,
              transform: Transform | None = None, max_depth: float = 10.0,
              require_ground_truth: bool = False) -> DepthSplitDataset:
    """NYU-Depth-V2 (BTS 'sync' layout): depth / 1000, max 10 m, Eigen crop for evaluation."""
    return DepthSplitDataset(data_root, gt_root, split_file, NYU_DEPTH_SCALE, max_depth,
                             transform, kb_crop=False, eval_crop="eigen_nyu",
                             require_ground_truth=require_ground_truth)


def kitti_eigen(data_root: str | Path, gt_root: str | Path, split_file: str | Path,
                transform: Transform | None = None, max_depth: float = 80.0,
                kb_crop: bool = True, eval_crop: str = "garg",
                require_ground_truth: bool = False) -> DepthSplitDataset:
    """KITTI Eigen split: depth / 256, max 80 m, KB crop on load, Garg crop for evaluation."""
    return DepthSplitDataset(data_root, gt_root, split_file, KITTI_DEPTH_SCALE, max_depth,
                             transform, kb_crop=kb_crop, eval_crop=eval_crop,
                             require_ground_truth=require_ground_truth)


class _ImageLabelFolder(Dataset):
    """(image, label map) pairs found by a subclass's `_find_pairs`."""

    num_classes: int

    def __init__(self, root: str | Path, split: str, transform: Transform | None) -> None:
        self.root = Path(root)
        self.split = split
        self.transform = transform
        self.pairs = self._find_pairs()
        if not self.pairs:
            raise DatasetError(f"no images found for split {split!r} under {self.root}")

    def _find_pairs(self) -> list[tuple[Path, Path]]:
        raise NotImplementedError

    def _map_labels(self, labels: np.ndarray) -> np.ndarray:
        return labels

    def validate(self) -> None:
        missing = [str(label) for _, label in self.pairs if not label.is_file()]
        if missing:
            raise DatasetError(f"{len(missing)} label file(s) missing, e.g. {missing[:5]}")

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> Sample:
        image_path, label_path = self.pairs[index]
        if not label_path.is_file():
            raise DatasetError(f"label file not found for {image_path}: {label_path}")
        sample: Sample = {
            "image": read_rgb(image_path),
            "labels": self._map_labels(read_labels(label_path)),
            "meta": {"rgb_path": str(image_path), "labels_path": str(label_path),
                     "index": index},
        }
        if sample["labels"].shape != sample["image"].shape[:2]:
            raise DatasetError(f"{label_path}: label and image sizes differ")
        return self.transform(sample) if self.transform is not None else sample


class ADE20KDataset(_ImageLabelFolder):
    """ADEChallengeData2016: images/<split>/*.jpg with annotations/<split>/<same stem>.png.

    reduce_zero_label (the standard 150-class setting): 0 ('other') -> 255, k -> k - 1.
    """

    num_classes = 150

    def __init__(self, root: str | Path, split: str = "training",
                 transform: Transform | None = None, reduce_zero_label: bool = True) -> None:
        self.reduce_zero_label = reduce_zero_label
        super().__init__(root, split, transform)

    def _find_pairs(self) -> list[tuple[Path, Path]]:
        image_dir = self.root / "images" / self.split
        if not image_dir.is_dir():
            raise DatasetError(f"ADE20K image folder not found: {image_dir}")
        label_dir = self.root / "annotations" / self.split
        return [(p, label_dir / f"{p.stem}.png") for p in sorted(image_dir.glob("*.jpg"))]

    def _map_labels(self, labels: np.ndarray) -> np.ndarray:
        if not self.reduce_zero_label:
            return labels
        # uint8 wrap-around: 0 -> 255; 255 (already ignore) -> 254 -> back to 255.
        reduced = labels.astype(np.uint8) - np.uint8(1)
        reduced[reduced == 254] = 255
        return reduced


class CityscapesDataset(_ImageLabelFolder):
    """Cityscapes: leftImg8bit/<split>/<city>/*_leftImg8bit.png with
    gtFine/<split>/<city>/*_gtFine_labelTrainIds.png (19 classes, 255 ignore)."""

    num_classes = len(CITYSCAPES_CLASSES)
    class_names = CITYSCAPES_CLASSES

    def __init__(self, root: str | Path, split: str = "train",
                 transform: Transform | None = None) -> None:
        super().__init__(root, split, transform)

    def _find_pairs(self) -> list[tuple[Path, Path]]:
        image_dir = self.root / "leftImg8bit" / self.split
        if not image_dir.is_dir():
            raise DatasetError(f"Cityscapes image folder not found: {image_dir}")
        suffix = "_leftImg8bit.png"
        pairs = []
        for image in sorted(image_dir.glob(f"*/*{suffix}")):
            stem = image.name[: -len(suffix)]
            label = (self.root / "gtFine" / self.split / image.parent.name
                     / f"{stem}_gtFine_labelTrainIds.png")
            pairs.append((image, label))
        return pairs
