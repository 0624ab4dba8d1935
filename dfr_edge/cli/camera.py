"""dfr-camera: live inspection of cameras, streams, video files or image folders with an exported model.

Each --source is read on its own thread that keeps only the newest frame (a slow model drops
frames, counted, instead of lagging); every round runs one inference over the newest frame of each
source. Without --headless a window per source shows the overlay, score, decision and frames/s
(q or Esc quits). Headless outputs: --record (annotated mp4, NAME-<i>.mp4 per source when several),
--events (JSON Lines: timestamp, source, frame id, score, decision, boxes, per-stage latency) and
--save-anomalies (frame, mask and overlay PNGs of anomalous frames). Live sources that drop are
reopened with growing pauses; video files and folders end the run; Ctrl-C or SIGTERM stop it. All
outputs are complete and playable however it stops.

Sources: a camera index (0), a video file, an rtsp:// or http:// URL, a folder of images, a
GStreamer pipeline (contains "!"), or --csi SENSOR_ID / --v4l2 DEVICE for the Jetson CSI and USB
pipelines.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dfr_edge.cli.common import ArgumentParser, add_threads_option, finite_float, positive_int, run_main


def parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="dfr-camera", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="exported .onnx file (any variant), a bundle folder (its best one here), or a "
                                 "Triton server's model: triton://HOST:8001/NAME")
    p.add_argument("--source", action="append", default=[], help="camera index, file, URL, folder or "
                   "GStreamer pipeline; repeat for several sources (batched into one inference per round)")
    p.add_argument("--csi", type=int, action="append", default=[], metavar="SENSOR_ID",
                   help="a Jetson CSI camera (nvarguscamerasrc), with --width/--height/--fps")
    p.add_argument("--v4l2", action="append", default=[], metavar="DEVICE",
                   help="a USB camera through GStreamer v4l2src (e.g. /dev/video0), with --width/--height/--fps")
    p.add_argument("--width", type=positive_int, default=1280, help="capture width for --csi/--v4l2")
    p.add_argument("--height", type=positive_int, default=720, help="capture height for --csi/--v4l2")
    p.add_argument("--fps", type=positive_int, default=30, help="capture frame rate for --csi/--v4l2")
    p.add_argument("--backend", default="onnxruntime", help="ENGINE[:PROVIDER], e.g. onnxruntime:cuda")
    p.add_argument("--provider", help="provider of the engine: cpu, cuda or tensorrt (ONNX Runtime)")
    p.add_argument("--headless", action="store_true", help="no window (servers, tests, services)")
    p.add_argument("--record", type=Path, help="annotated mp4")
    p.add_argument("--events", type=Path, help="JSON Lines events file")
    p.add_argument("--save-anomalies", type=Path, metavar="DIR", help="save anomalous frames, masks, overlays")
    p.add_argument("--force", action="store_true",
                   help="overwrite existing --record/--events files; write into a non-empty --save-anomalies folder")
    p.add_argument("--pixel-threshold", type=finite_float, help="override the model's pixel threshold")
    p.add_argument("--image-threshold", type=finite_float, help="override the model's image threshold")
    p.add_argument("--max-frames", type=positive_int, help="stop after this many decisions")
    p.add_argument("--fps-limit", type=float, help="at most this many inference rounds per second")
    p.add_argument("--no-pace", action="store_true",
                   help="read video files and folders as fast as possible instead of at their frame rate")
    p.add_argument("--every-frame", action="store_true",
                   help="video files and folders: process every frame (the reader waits for the model)")
    p.add_argument("--in-flight", type=positive_int, default=1, help="rounds in flight: 2 overlaps resizing and "
                   "post-processing with inference, one inference at a time (ONNX Runtime is safe for it); it pays "
                   "where inference leaves a core free, e.g. --threads below the core count (default 1)")
    p.add_argument("--summary", type=Path, help="write the final statistics as JSON")
    add_threads_option(p)
    return p


def source_specs(args: argparse.Namespace) -> list:
    from dfr_edge.runtime.camera import SourceSpec, csi_pipeline, parse_source, v4l2_pipeline

    specs = [parse_source(s) for s in args.source]
    specs += [SourceSpec(csi_pipeline(i, args.width, args.height, args.fps), "gstreamer") for i in args.csi]
    specs += [SourceSpec(v4l2_pipeline(d, args.width, args.height, args.fps), "gstreamer") for d in args.v4l2]
    if not specs:
        raise ValueError("no source given: use --source, --csi or --v4l2")
    return specs


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT/SIGTERM end the loop cleanly; a second one gets the previous handler (a hard stop).

    The previous handlers are back when the block ends, so calling main() leaves its caller as it was.
    """
    signals = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.getsignal(s) for s in signals}

    def handler(signum, _frame):
        print(f"\n{signal.Signals(signum).name}: stopping (closing outputs)", file=sys.stderr)
        stop.set()
        signal.signal(signum, previous[signum])

    for s in signals:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@run_main
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from tqdm.contrib.logging import logging_redirect_tqdm

    from dfr_edge.report import write_json
    from dfr_edge.runtime.camera import CameraConfig, CameraOutputs, run_camera
    from dfr_edge.runtime.camera.engine_choice import load_with, parse_backend

    if args.fps_limit is not None and not args.fps_limit > 0:
        raise ValueError("--fps-limit must be a positive number of rounds per second")
    specs = source_specs(args)
    outputs = CameraOutputs(args.record, args.events, args.save_anomalies, window=not args.headless,
                            force=args.force)
    outputs.check(len(specs))
    detector = load_with(parse_backend(args.backend, args.provider), args.model, threads=args.threads,
                         max_batch=max(len(specs), 1), pixel_threshold=args.pixel_threshold,
                         image_threshold=args.image_threshold)
    config = CameraConfig(max_frames=args.max_frames, fps_limit=args.fps_limit, pace=not args.no_pace,
                          every_frame=args.every_frame, in_flight=args.in_flight)
    stop = threading.Event()
    with stop_on_signals(stop), logging_redirect_tqdm():
        summary = run_camera(detector, specs, config, outputs, stop=stop, progress=True)
    f2d = summary["latency_ms_last_frames"]["frame_to_decision"]
    print(f"{summary['frames_out']} frame(s) decided in {summary['seconds']:.1f} s "
          f"({summary['fps_out']:.1f}/s; {summary['frames_in']} read, {summary['dropped']} dropped); "
          f"frame-to-decision p50 {f2d['p50']:.1f} ms, p99 {f2d['p99']:.1f} ms")
    if args.summary:
        write_json(args.summary, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
