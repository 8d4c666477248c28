"""The `node_pipeline` step of benchmarks/gpu_check.py: the node's frame path on the device."""

from __future__ import annotations

import time

import numpy as np

from benchmarks.gpu_check_steps import DEMO_MODEL, Context, free_cuda, synthetic_frame


def step_node_pipeline(ctx: Context) -> dict:
    """The node's frame path without ROS (`FramePipeline` + `InferenceWorker`) at 1920x1080,
    every output wanted (points at stride 2, as the node's default): frames/s and per-frame
    post ms when each batch is built and "published" (each message's data copied once, the
    least rclpy's publish does) after its forward pass, against while the next forward pass
    runs (overlapped delivery: the node's choice on a GPU)."""
    from types import SimpleNamespace

    from xnet_model import Predictor
    from xnet_ros.pipeline import FrameInput, FramePipeline, FrameSettings
    from xnet_ros.worker import InferenceWorker

    ctx.require_device()
    h, w = 1080, 1920
    rgb = synthetic_frame(h, w)
    header = SimpleNamespace(stamp=SimpleNamespace(sec=0, nanosec=0), frame_id="camera")
    image = SimpleNamespace(header=header, height=h, width=w, encoding="rgb8", is_bigendian=0,
                            step=3 * w, data=rgb.tobytes())
    info = SimpleNamespace(width=w, height=h, k=[1000.0, 0, w / 2, 0, 1000.0, h / 2, 0, 0, 1],
                           d=[], r=[1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0], p=[],
                           distortion_model="plumb_bob")
    seconds = 3.0 if ctx.quick else 10.0
    predictor = Predictor(DEMO_MODEL, device=ctx.device,
                          precision="fp16" if ctx.cuda else "fp32")
    rows = []
    for mode in ("in turn", "overlapped"):
        pipe = FramePipeline(predictor, FrameSettings(points_stride=2))
        pipe.set_camera_info(info)
        posts: list[float] = []

        def publish(item, result, error, snapshot, pipe=pipe, posts=posts) -> float:
            if error is not None:
                raise error
            t0 = time.perf_counter()
            for fields in result.outputs.fields.values():
                data = fields.get("data") if isinstance(fields, dict) else fields.data
                if data is not None:  # images and the point cloud; not camera_info
                    bytes(data)
            result.outputs.release()
            publish_ms = (time.perf_counter() - t0) * 1e3
            posts.append(result.timings["post_ms"] + publish_ms)
            return publish_ms

        worker = InferenceWorker(pipe.infer_batch, finish=pipe.finish_predicted,
                                 overlap=mode == "overlapped", on_done=publish, batched=True)
        worker.start()
        try:
            for _ in range(3):  # warm-up, one frame at a time
                worker.submit(FrameInput(image))
                worker.wait_idle(60.0)
            start, done0 = time.perf_counter(), worker.snapshot().processed
            del posts[:]
            while time.perf_counter() - start < seconds:  # keep the slot full
                if not worker.snapshot().pending:
                    worker.submit(FrameInput(image))
                time.sleep(0.0005)
            worker.wait_idle(60.0)
            snap = worker.snapshot()
            elapsed = time.perf_counter() - start
        finally:
            worker.stop(30.0)
        if snap.failed:
            raise RuntimeError(f"{mode}: {snap.failed} frames failed: {snap.last_error}")
        rows.append({"mode": mode, "fps": round((snap.processed - done0) / elapsed, 1),
                     "post_ms": round(float(np.median(posts)), 2),
                     "infer_ms": round(snap.latency["infer_ms"].p50, 2),
                     "frames": snap.processed - done0})
        ctx.emit(input=f"{w}x{h} rgb8, demo model, every output, points_stride 2",
                 backend=predictor.backend.describe(), rows=rows)
    free_cuda()
    return {"_status": "ok"}
