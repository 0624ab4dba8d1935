"""dfr-camera as a library: live inspection over cameras, streams, files and image folders.

    from dfr_edge.runtime import load_detector
    from dfr_edge.runtime.camera import CameraConfig, CameraOutputs, parse_source, run_camera

    def on_detection(event, frame, detection):     # e.g. tell the line's PLC
        if event.anomalous:
            reject(event.source, event.frame_id)

    detector = load_detector("bundle/model.int8-cpu.onnx")
    summary = run_camera(detector, [parse_source("0")], CameraConfig(fps_limit=15),
                         CameraOutputs(events="events.jsonl"), on_detection=on_detection)
"""

from dfr_edge.runtime.camera.capture import Reconnect
from dfr_edge.runtime.camera.loop import CameraConfig, CameraOutputs, run_camera
from dfr_edge.runtime.camera.outputs import Event
from dfr_edge.runtime.camera.sources import SourceSpec, csi_pipeline, parse_source, v4l2_pipeline

__all__ = ["CameraConfig", "CameraOutputs", "Event", "Reconnect", "SourceSpec", "csi_pipeline", "parse_source",
           "run_camera", "v4l2_pipeline"]
