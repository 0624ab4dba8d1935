"""Tell the line about anomalies: dfr-camera's `on_detection` hook posting events over HTTP or MQTT.

    python examples/plc_hook.py MODEL.onnx --source 0 --http http://plc-gateway:8080/dfr
    python examples/plc_hook.py MODEL.onnx --source rtsp://cam/stream --mqtt broker.local --topic line3/dfr

HTTP uses only the standard library; MQTT needs paho-mqtt (`pip install paho-mqtt`) and says so if it
is missing. Events are sent from a worker thread through a bounded queue, so a slow or unreachable
endpoint never slows the inspection; when the queue is full the oldest unsent event is dropped and
counted. By default only anomalous frames are sent (--all sends every decision).
"""

from __future__ import annotations

import argparse
import json
import logging
import queue
import sys
import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("plc_hook")


class EventSender:
    """on_detection callable: queues events; a daemon thread hands them to `send` one by one."""

    def __init__(self, send: Callable[[bytes], None], only_anomalies: bool = True, capacity: int = 100):
        self.send, self.only_anomalies = send, only_anomalies
        self.queue: queue.Queue[bytes | None] = queue.Queue(capacity)
        self.sent = self.failed = self.dropped = 0
        self.worker = threading.Thread(target=self._run, name="event-sender", daemon=True)
        self.worker.start()

    def __call__(self, event, frame, detection) -> None:
        if self.only_anomalies and not event.anomalous:
            return
        payload = json.dumps(event.to_dict()).encode()
        while True:
            try:
                self.queue.put_nowait(payload)
                return
            except queue.Full:
                try:
                    self.queue.get_nowait()  # drop the oldest: the line cares about now
                    self.dropped += 1
                except queue.Empty:
                    pass

    def _run(self) -> None:
        while (payload := self.queue.get()) is not None:
            try:
                self.send(payload)
                self.sent += 1
            except Exception as exc:  # an unreachable endpoint must not end the worker
                self.failed += 1
                log.warning("could not send event: %s", exc)

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued (up to `timeout` s), then stop the worker."""
        self.queue.put(None)
        self.worker.join(timeout)


def http_sender(url: str, timeout: float = 2.0) -> Callable[[bytes], None]:
    def send(payload: bytes) -> None:
        request = urllib.request.Request(url, data=payload, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()

    return send


def mqtt_sender(host: str, topic: str, port: int = 1883) -> Callable[[bytes], None]:
    try:
        import paho.mqtt.client as mqtt
    except ImportError:
        raise SystemExit("error: --mqtt needs paho-mqtt: pip install paho-mqtt") from None
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    client.connect(host, port)
    client.loop_start()
    return lambda payload: client.publish(topic, payload, qos=1).wait_for_publish(2.0)


def main(argv: list[str] | None = None) -> int:
    from dfr_edge.cli.camera import source_specs, stop_on_signals
    from dfr_edge.runtime import load_detector
    from dfr_edge.runtime.camera import CameraConfig, run_camera

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=Path)
    p.add_argument("--source", action="append", default=[], help="as for dfr-camera (repeatable)")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--http", metavar="URL", help="POST each event as JSON to this URL")
    target.add_argument("--mqtt", metavar="HOST", help="publish each event to this MQTT broker")
    p.add_argument("--topic", default="dfr/events", help="MQTT topic")
    p.add_argument("--all", action="store_true", help="send every decision, not only anomalies")
    p.add_argument("--max-frames", type=int)
    args = p.parse_args(argv)
    args.csi, args.v4l2 = [], []
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    sender = EventSender(http_sender(args.http) if args.http else mqtt_sender(args.mqtt, args.topic),
                         only_anomalies=not args.all)
    stop = threading.Event()
    try:
        with stop_on_signals(stop):
            run_camera(load_detector(args.model), source_specs(args), CameraConfig(max_frames=args.max_frames),
                       on_detection=sender, stop=stop, progress=True)
    finally:
        sender.close()
    print(f"events sent {sender.sent}, failed {sender.failed}, dropped {sender.dropped}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
