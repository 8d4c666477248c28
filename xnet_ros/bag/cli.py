"""`xnet bag infer|eval`: offline rosbag tools, no ROS install needed.

Exit status: 0 done; 1 error (message on stderr, nothing or an aborted bag written); 2 usage;
3 the input bag is damaged part-way: results for the frames read before were written and the
error is reported; 130 interrupted (results so far written, like 3).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..outputs import ALL_OUTPUTS, COLOR, DEPTH, DEPTH_INFO, LABELS, POINTS, tune_malloc
from ..params import CLASS_TABLE_TOPIC, RECTIFY_CHOICES, NodeParams
from ..pipeline import FrameSettings, ModelLoadError
from .io import STORAGES, BagError

log = logging.getLogger("xnet_ros.bag")

EXIT_ERROR, EXIT_USAGE, EXIT_INCOMPLETE, EXIT_INTERRUPTED = 1, 2, 3, 130
OUTPUT_FLAGS = {DEPTH: "depth", DEPTH_INFO: "depth-info", LABELS: "labels", COLOR: "color",
                POINTS: "points"}


def _size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW, e.g. 240x320, got {text!r}") from None
    if height <= 0 or width <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return height, width


def _common(parser: argparse.ArgumentParser, infer: bool) -> None:
    parser.add_argument("bag", type=Path, help="rosbag2 directory, or a .mcap / .db3 file")
    parser.add_argument("--model", required=True, type=Path, help="saved xNet model directory")
    parser.add_argument("--image-topic", required=True, action="append",
                        help="sensor_msgs/Image or CompressedImage topic; repeat it for several "
                        "cameras (one pass, one forward pass per batch of one frame per camera)")
    parser.add_argument("--camera-info-topic", action="append", default=None,
                        help="CameraInfo topic (default: <image topic's namespace>/camera_info "
                        "if present); with several --image-topic, one per image topic, in order")
    parser.add_argument("--no-camera-info", action="store_true",
                        help="ignore camera info: no rectification"
                        + (", no depth/camera_info, no points" if infer else ""))
    parser.add_argument("--rectify", choices=RECTIFY_CHOICES, default=NodeParams().rectify,
                        help="auto: undistort images whose camera info has distortion, as the "
                        "node does (default); off: use them as they are")
    parser.add_argument("--max-batch", type=int, default=0, metavar="N",
                        help="frames per forward pass (default: one per camera)")
    parser.add_argument("--every", type=int, default=1, metavar="N",
                        help="use every N-th image (default: all)")
    parser.add_argument("--backend", default="torch", help="inference backend (default: torch)")
    parser.add_argument("--device", default=None, help="e.g. cpu, cuda (default: auto)")
    parser.add_argument("--read-ahead", type=int, default=4, metavar="N",
                        help="frames read and decoded ahead of the model (0: off)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xnet bag", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    infer = sub.add_parser("infer", help="run the model over a bag, write the node's topics",
                           description="Run the model on the images of a bag and write a new "
                           "bag with what xnet_node publishes (same topics, stamps, frame_ids).")
    _common(infer, infer=True)
    infer.add_argument("--out", required=True, type=Path, help="output bag directory (new)")
    infer.add_argument("--storage", choices=STORAGES, default="mcap")
    infer.add_argument("--copy-input", action="store_true",
                       help="also copy every input topic, unchanged")
    infer.add_argument("--out-namespace", default="/xnet", help="namespace of the outputs "
                       "(with several cameras: <namespace>/<camera>/...)")
    for name, flag in OUTPUT_FLAGS.items():
        infer.add_argument(f"--{flag}", action=argparse.BooleanOptionalAction, default=True,
                           help=f"write <namespace>/{name} (default: yes)")
    infer.add_argument("--class-table", action=argparse.BooleanOptionalAction, default=True,
                       help=f"write <namespace>/{CLASS_TABLE_TOPIC} once (default: yes)")
    # Defaults are the node's (xnet_ros.params.NodeParams), so the bag shows what it publishes.
    node = NodeParams()
    infer.add_argument("--frame-id", default=node.frame_id,
                       help="frame_id of the outputs (default: the input image's)")
    infer.add_argument("--output-size", type=_size, default=None, metavar="HxW",
                       help="size of the outputs (default: the input image's)")
    infer.add_argument("--min-depth", type=float, default=None, metavar="M",
                       help="depth at or below this is written as NaN (default: the model's)")
    infer.add_argument("--points-stride", type=int, default=node.points_stride, metavar="N",
                       help=f"every N-th pixel in the cloud (default: {node.points_stride})")
    infer.add_argument("--points-max-range", type=float, default=None, metavar="M",
                       help="drop points farther than M metres along z")
    infer.add_argument("--points-unorganized", action="store_true",
                       help="drop invalid points (height 1) instead of keeping the image grid")
    infer.add_argument("--fx", type=float, default=0.0,
                       help="fallback intrinsics when there is no (matching) camera info")
    infer.add_argument("--fy", type=float, default=0.0, help="default: --fx")
    infer.add_argument("--cx", type=float, default=0.0, help="default: the image centre")
    infer.add_argument("--cy", type=float, default=0.0, help="default: the image centre")

    ev = sub.add_parser("eval", help="evaluate the model against GT depth/labels in a bag",
                        description="Match images with GT depth (32FC1 m / 16UC1 mm) and/or GT "
                        "labels (mono8/mono16, 255 = ignore) by header stamp; write "
                        "metrics.json, report.md and plots.")
    _common(ev, infer=False)
    ev.add_argument("--depth-topic", action="append", default=None,
                    help="GT depth Image topic (one per --image-topic, in order)")
    ev.add_argument("--labels-topic", action="append", default=None,
                    help="GT label Image topic (one per --image-topic, in order)")
    ev.add_argument("--report", required=True, type=Path,
                    help="report directory (several cameras: one subdirectory each)")
    ev.add_argument("--match", choices=("exact", "nearest"), default="exact")
    ev.add_argument("--tolerance-ms", type=float, default=20.0,
                    help="max stamp difference for --match nearest (default: 20)")
    ev.add_argument("--crop", choices=("none", "garg", "eigen_kitti", "eigen_nyu"),
                    default="none")
    ev.add_argument("--min-depth", type=float, default=1e-3)
    ev.add_argument("--max-depth", type=float, default=None,
                    help="default: the model's max depth (80 m if it has none)")
    ev.add_argument("--num-panels", type=int, default=4, metavar="N",
                    help="frames shown as RGB | GT | prediction | error panels")
    ev.add_argument("--fx", type=float, default=0.0,
                    help="the camera's focal length (px) when the bag has no (matching) camera "
                         "info: a camera-aware model's depth is metric through it")
    ev.add_argument("--fy", type=float, default=0.0, help="default: --fx")
    return parser


def load_predictor(path: Path, backend: str, device: str | None):
    from ..pipeline import load_predictor

    if not path.is_dir():
        raise BagError(f"model directory not found: {path}")
    try:
        return load_predictor(path, backend, device)
    except ModelLoadError as exc:  # config, weights, backend: this model cannot be used
        raise BagError(f"cannot load model from {path}: {exc}") from None
    except Exception as exc:  # anything else means the same
        raise BagError(f"cannot load model from {path}: {type(exc).__name__}: {exc}") from None


def _settings(args: argparse.Namespace) -> FrameSettings:
    """The node's per-frame settings for these arguments (0/None = the model's min depth)."""
    fallback = None
    if args.fx > 0:
        fallback = (args.fx, args.fy or args.fx, args.cx, args.cy)
    return FrameSettings(output_size=args.output_size, min_depth=args.min_depth or 0.0,
                         points_stride=args.points_stride,
                         points_max_range=args.points_max_range,
                         points_organized=not args.points_unorganized,
                         fallback_intrinsics=fallback, frame_id=args.frame_id,
                         rectify=args.rectify)


def _infer(args: argparse.Namespace) -> int:
    from .infer import InferOptions, run_infer

    if args.out.exists():
        raise BagError(f"output {args.out} exists already; remove it or choose another --out")
    predictor = load_predictor(args.model, args.backend, args.device)
    outputs = frozenset(n for n in ALL_OUTPUTS if getattr(args, OUTPUT_FLAGS[n].replace("-", "_")))
    opts = InferOptions(
        image_topic=args.image_topic, camera_info_topic=args.camera_info_topic,
        use_camera_info=not args.no_camera_info, every=args.every, storage=args.storage,
        copy_input=args.copy_input, namespace=args.out_namespace, outputs=outputs,
        class_table=args.class_table, settings=_settings(args), read_ahead=args.read_ahead,
        quiet=args.quiet, max_batch=args.max_batch)
    summary = run_infer(args.bag, args.out, predictor, opts)
    topics = ", ".join(f"{t} ({n})" for t, n in summary.written.items())
    model_share = summary.model_seconds / summary.seconds if summary.seconds else 0.0
    batches = (f", {summary.batches} batched forward passes"
               if summary.batches != summary.processed else "")
    print(f"{summary.processed} of {summary.images} images processed "
          f"({summary.failed} failed{batches}) in {summary.seconds:.1f} s, "
          f"{summary.fps:.2f} FPS "
          f"(model {model_share:.0%} of the time); "
          f"wrote {args.out}: {topics}"
          + (f"; copied {summary.copied} input messages" if summary.copied else ""))
    return _status(summary.read_error, summary.interrupted)


def _eval(args: argparse.Namespace) -> int:
    from .evaluate import EvalOptions, run_eval

    predictor = load_predictor(args.model, args.backend, args.device)
    opts = EvalOptions(
        image_topic=args.image_topic, depth_topic=args.depth_topic,
        labels_topic=args.labels_topic, camera_info_topic=args.camera_info_topic,
        use_camera_info=not args.no_camera_info, rectify=args.rectify,
        max_batch=args.max_batch, match=args.match, tolerance_ms=args.tolerance_ms,
        crop=None if args.crop == "none" else args.crop, min_depth=args.min_depth,
        max_depth=args.max_depth, num_panels=args.num_panels, every=args.every,
        read_ahead=args.read_ahead, quiet=args.quiet,
        fallback_intrinsics=(args.fx, args.fy or args.fx, 0.0, 0.0) if args.fx > 0 else None)
    doc = run_eval(args.bag, args.report, predictor, opts)
    for name, camera in (doc["cameras"].items() if "cameras" in doc else [("", doc)]):
        print(f"{name + ': ' if name else ''}{_eval_line(camera)}; report in "
              f"{args.report / name.replace('/', '_') if name else args.report}")
    interrupted = doc["read_error"] == "interrupted"
    return _status(None if interrupted else doc["read_error"], interrupted)


def _eval_line(doc: dict) -> str:
    c = doc["counts"]
    parts = [f"{c['images']} images: {c['matched']} matched, {c['partial']} partial, "
             f"{c['without_gt']} without GT, {c['failed']} failed"]
    if doc["depth"] is not None:
        parts.append(f"AbsRel {doc['depth']['abs_rel']:.4f}, RMSE {doc['depth']['rmse']:.3f} m, "
                     f"d1 {doc['depth']['d1']:.4f} over {doc['depth']['count']} images")
    if doc["segmentation"] is not None:
        parts.append(f"mIoU {doc['segmentation']['mIoU']:.4f}")
    return "; ".join(parts)


def _status(read_error: str | None, interrupted: bool) -> int:
    if interrupted:
        print("xnet bag: interrupted; results so far were written", file=sys.stderr)
        return EXIT_INTERRUPTED
    if read_error:
        print(f"xnet bag: error: {read_error}\nxnet bag: results for the frames read before "
              "the error were written", file=sys.stderr)
        return EXIT_INCOMPLETE
    return 0


def main(argv: list[str] | None = None) -> int:
    """offline rosbag tools: infer, eval (no ROS needed)"""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    tune_malloc()  # as the node: keep the multi-MB per-frame buffers mapped between frames
    try:
        return _infer(args) if args.command == "infer" else _eval(args)
    except BagError as exc:
        print(f"xnet bag {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("xnet bag: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
