"""dfr-serve's work: a real Triton server on this machine, without Docker, through NVIDIA PyTriton.

PyTriton's wheel carries `tritonserver` and its Python backend; the served function runs our ONNX
Runtime backend. Model name, I/O names, batching and the dfr.json parameter are the ones the
repository export writes (`dfr_edge.runtime.triton.model`), so clients cannot tell the two apart.
Needs the `serve` extra (nvidia-pytriton: numpy < 2, glibc >= 2.35).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sysconfig
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dfr_edge.runtime.onnxrt import OnnxRuntimeBackend
from dfr_edge.runtime.triton.model import (
    DEFAULT_MAX_BATCH,
    DEFAULT_NAME,
    DEFAULT_QUEUE_DELAY_US,
    INPUT,
    MAP_OUTPUT,
    SCORE_OUTPUT,
    ServedModel,
    parameters,
)

log = logging.getLogger(__name__)
# Endpoints a client may not use without PyTriton's token: loading/unloading models, tracing, logging.
# Shared memory and statistics stay open, as on a plain tritonserver, for local clients and metrics.
RESTRICTED_ENDPOINTS = ["model-repository", "trace", "logging"]
START_ATTEMPTS = 3  # only --instances > 1 retries (see Server.__init__)


@dataclass(frozen=True)
class ServeOptions:
    name: str = DEFAULT_NAME
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    max_batch: int = DEFAULT_MAX_BATCH
    instances: int = 1
    queue_delay_us: int = DEFAULT_QUEUE_DELAY_US
    provider: str = "cpu"
    threads: int | None = None  # ONNX Runtime intra-op threads per instance
    start_timeout_s: float = 120.0


def model_file(path: Path) -> Path:
    """The ONNX file to serve: the file itself, or a bundle's FP32 export."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.onnx"
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: export the bundle first (dfr-export {path.parent})")
    elif not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (give an exported .onnx file or a bundle folder)")
    return path


def python_library_dir() -> str:
    """Where this interpreter's libpython lives: the Python backend stub links it by name."""
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    library = sysconfig.get_config_var("LDLIBRARY") or ""
    if not (Path(libdir) / library).is_file():
        raise RuntimeError(
            f"this Python has no shared libpython ({Path(libdir) / library} missing), which the Triton Python "
            f"backend stub needs; use a Python built with --enable-shared (pyenv: "
            f"PYTHON_CONFIGURE_OPTS=--enable-shared pyenv install ...)"
        )
    return libdir


def use_python_library() -> None:
    """Put this interpreter's libpython first on the library path the tritonserver child inherits."""
    libdir = python_library_dir()
    paths = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p and p != libdir]
    os.environ["LD_LIBRARY_PATH"] = ":".join([libdir, *paths])


def _import_pytriton():
    try:
        from pytriton.decorators import batch
        from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
        from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig
    except ImportError as exc:
        raise ImportError(f"dfr-serve needs NVIDIA PyTriton: pip install 'dfr-edge[serve]' ({exc})") from exc
    return batch, DynamicBatcher, ModelConfig, Tensor, Triton, TritonConfig, TritonSecurityConfig


def infer_function(backend: OnnxRuntimeBackend, batch: Callable) -> Callable:
    """One model instance: a batch of frames through the local backend, the score served as N x 1."""

    @batch
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        amap, score = backend.infer(inputs[INPUT])
        return {MAP_OUTPUT: amap, SCORE_OUTPUT: score.reshape(-1, 1)}

    return infer


def _add_parameters(triton, name: str, values: dict[str, str]) -> None:
    """dfr.json into the served config's parameters (PyTriton 0.7 has no public hook for it)."""
    for model in triton._model_manager.models:
        if model.model_name == name:
            model._get_triton_model_config().backend_parameters.update(values)
            return
    raise RuntimeError(f"PyTriton did not register model {name!r}")  # pragma: no cover


class Server:
    """A started PyTriton server for one exported model; `stop()` shuts it down."""

    def __init__(self, path: Path, options: ServeOptions):
        _import_pytriton()  # fail on a missing extra before loading anything
        use_python_library()
        self.path = model_file(path)
        # Instances share the cores: idle ones must not spin on them.
        backends = [OnnxRuntimeBackend(self.path, provider=options.provider, threads=options.threads,
                                       max_batch=options.max_batch, spin=False) for _ in range(options.instances)]
        first = backends[0]
        self.model = ServedModel(options.name, first.height, first.width, options.max_batch,
                                 options.queue_delay_us, options.instances)
        self.options = options
        self.backend_name = first.name
        self._backends = backends
        for attempt in range(1, START_ATTEMPTS + 1):
            self._triton = self._bind(first)
            try:
                self._start(options.start_timeout_s)
                return
            except RuntimeError as exc:
                # PyTriton 0.7 gives the 2nd..Kth instance 1 s to find the first one's handshake socket;
                # on a busy machine that race is often lost: start afresh a few times, then give up.
                if attempt == START_ATTEMPTS or options.instances == 1 or "config.sock" not in str(exc):
                    raise
                log.warning("PyTriton's instance handshake timed out (a busy CPU); starting the server again")

    def _bind(self, first: OnnxRuntimeBackend):
        batch, DynamicBatcher, ModelConfig, Tensor, Triton, TritonConfig, TritonSecurityConfig = _import_pytriton()
        o = self.options
        config = TritonConfig(http_port=o.http_port, grpc_port=o.grpc_port, metrics_port=o.metrics_port,
                              exit_on_error=True)
        triton = Triton(config=config, security_config=TritonSecurityConfig(restricted_endpoints=RESTRICTED_ENDPOINTS))
        h, w = self.model.height, self.model.width
        triton.bind(
            model_name=self.model.name,
            infer_func=[infer_function(b, batch) for b in self._backends],
            inputs=[Tensor(name=INPUT, dtype=np.uint8, shape=(h, w, 3))],
            outputs=[Tensor(name=MAP_OUTPUT, dtype=np.float32, shape=(h, w)),
                     Tensor(name=SCORE_OUTPUT, dtype=np.float32, shape=(1,))],
            config=ModelConfig(max_batch_size=self.model.max_batch_size,
                               batcher=DynamicBatcher(max_queue_delay_microseconds=self.model.queue_delay_us)),
            strict=True,
        )
        _add_parameters(triton, self.model.name, parameters(first.manifest, first.export_info))
        return triton

    def _start(self, timeout_s: float) -> None:
        """Start tritonserver and load the model; a stub that hangs becomes a clear error, not a hang.

        run() stays on this thread: tritonserver gets SIGTERM when the thread that started it ends.
        """
        watchdog = threading.Timer(timeout_s, self._triton.stop)  # ends a hung start: run() then raises
        watchdog.daemon = True
        watchdog.start()
        try:
            self._triton.run()
        except Exception as exc:  # noqa: BLE001 - PyTriton raises several unrelated types here
            self.stop()
            reason = f"the model did not load within {timeout_s:g} s" if not watchdog.is_alive() else str(exc)
            raise RuntimeError(
                f"Triton could not serve {self.path}: {reason}. The Python backend stub needs this "
                f"interpreter's libpython ({python_library_dir()}, put on LD_LIBRARY_PATH) and free ports "
                f"{self.options.http_port}/{self.options.grpc_port}/{self.options.metrics_port}; the server "
                f"log above says more"
            ) from None
        finally:
            watchdog.cancel()

    def wait(self, poll_s: float = 1.0) -> bool:
        """Serve until interrupted (KeyboardInterrupt) or until the server dies; True if it died."""
        try:
            while self._triton.is_alive():
                time.sleep(poll_s)
            return True
        finally:
            self.stop()

    def stop(self) -> None:
        self._triton.stop()


def free_ports(count: int) -> list[int]:
    """Ports nobody listens on right now (for tests and benchmarks that start their own server)."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


class ServeProcess:
    """dfr-serve in a child process (possibly another venv's python) on free ports, its log in a file."""

    def __init__(self, python: str, model: Path, log: Path, *extra: str, start_timeout_s: float = 180.0,
                 ports: tuple[int, int, int] | None = None):
        self.http, self.grpc, self.metrics = ports or free_ports(3)
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
        self.log = Path(log)
        offset = self.log.stat().st_size if self.log.exists() else 0  # a restart appends to the same log
        self.process = subprocess.Popen(
            [python, "-m", "dfr_edge.cli.serve", str(model), "--http-port", str(self.http), "--grpc-port",
             str(self.grpc), "--metrics-port", str(self.metrics), *extra],
            env=env, stdout=self.log.open("a"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + start_timeout_s
        while b"serving " not in self.log.read_bytes()[offset:]:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"dfr-serve did not start:\n{self.log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.5)

    def url(self, protocol: str = "grpc", name: str = DEFAULT_NAME) -> str:
        if protocol == "grpc":
            return f"triton://127.0.0.1:{self.grpc}/{name}"
        return f"triton+http://127.0.0.1:{self.http}/{name}"

    def stop(self) -> None:
        """SIGTERM (a clean Triton shutdown), then a kill if it takes over a minute; safe to call twice."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
