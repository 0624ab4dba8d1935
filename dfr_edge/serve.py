"""dfr-serve's work: a real Triton server on this machine, without Docker.

It starts the `tritonserver` binary from NVIDIA PyTriton's wheel on a model repository it generates
(`dfr_edge.serve_repository`): the repository export's config with the Python backend, whose stub
process runs our ONNX Runtime backend itself (`dfr_edge.serve_model`). Model name, I/O names, batching
and the dfr.json parameter are the export's, so clients cannot tell the two apart. PyTriton's own
serving path (stub -> socket -> a proxy in this process) cost ~6-9 ms per request here and is not used.
Needs the `serve` extra (nvidia-pytriton: numpy < 2, glibc >= 2.35).
"""

from __future__ import annotations

import ctypes
import os
import secrets
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from dfr_edge.runtime.onnxrt import OnnxRuntimeBackend
from dfr_edge.runtime.triton.model import DEFAULT_MAX_BATCH, DEFAULT_NAME, SERVE_QUEUE_DELAY_US, ServedModel
from dfr_edge.serve_repository import (
    StubSettings,
    TritonDistribution,
    triton_distribution,
    write_backends,
    write_repository,
)

# Endpoints a client may not use without the server's random token: loading/unloading models, tracing,
# logging. Shared memory and statistics stay open, as on a plain tritonserver, for local clients and metrics.
RESTRICTED_ENDPOINTS = "model-repository,trace,logging"
ACCESS_HEADER = "triton-access-token"
# Each stub's shared memory with tritonserver: a batch of 8 frames and maps at 256x256 (3.5 MB) fits from
# the start, and it grows for larger ones; the backend's 64 MB default would not fit twice in a
# container's default 64 MB /dev/shm.
BACKEND_SHM_BYTES = 16 << 20


@dataclass(frozen=True)
class ServeOptions:
    name: str = DEFAULT_NAME
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    max_batch: int = DEFAULT_MAX_BATCH
    instances: int = 1
    queue_delay_us: int = SERVE_QUEUE_DELAY_US
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


def _first_on_path(first: str, value: str | None) -> str:
    return ":".join([first, *[p for p in (value or "").split(":") if p and p != first]])


def server_environment(distribution: TritonDistribution, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment tritonserver and its stubs inherit.

    The stub links `libpython3.x.so` by name: under pyenv or any non-system Python it would pick up
    another one (an obscure AttributeError at model load), so this interpreter's LIBDIR comes first.
    The stub's embedded Python finds its prefix (this venv, with onnxruntime) through PATH.
    """
    env = dict(os.environ if base is None else base)
    env["LD_LIBRARY_PATH"] = _first_on_path(python_library_dir(), env.get("LD_LIBRARY_PATH"))
    env["LD_LIBRARY_PATH"] += f":{distribution.libraries}"
    env["PATH"] = _first_on_path(str(Path(sys.executable).parent), env.get("PATH"))
    return env


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """tritonserver gets SIGTERM when dfr-serve dies, even by SIGKILL: no orphan keeps the ports."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Server:
    """A started tritonserver serving one exported model; `stop()` shuts it down."""

    def __init__(self, path: Path, options: ServeOptions):
        distribution = triton_distribution()  # fail on a missing extra before loading anything
        self.path = model_file(path)
        self.options = options
        # Load it here once: a bad file or provider is a clear error now, not a line in the server log.
        backend = OnnxRuntimeBackend(self.path, provider=options.provider, threads=options.threads,
                                     max_batch=options.max_batch, spin=False)
        self.backend_name = backend.name
        self.model = ServedModel(options.name, backend.height, backend.width, options.max_batch,
                                 options.queue_delay_us, options.instances)
        self._workdir = tempfile.TemporaryDirectory(prefix="dfr-serve-")
        work = Path(self._workdir.name)
        repository = write_repository(work / "models", self.model, backend.manifest, backend.export_info,
                                      StubSettings(self.path, options.provider, options.threads, options.max_batch))
        command = self._command(distribution, repository, write_backends(work / "backends", distribution))
        # dfr-serve starts no thread before this point, which preexec_fn needs
        self._process = subprocess.Popen(command, env=server_environment(distribution), stdin=subprocess.DEVNULL,
                                         preexec_fn=_die_with_parent)  # noqa: PLW1509
        try:
            self._wait_ready(options.start_timeout_s)
        except BaseException:
            self.stop()
            raise

    def _command(self, distribution: TritonDistribution, repository: Path, backends: Path) -> list[str]:
        o = self.options
        restricted = f"{RESTRICTED_ENDPOINTS}:{ACCESS_HEADER}={secrets.token_urlsafe(32)}"
        return [str(distribution.server), f"--model-repository={repository}", f"--backend-directory={backends}",
                f"--cache-directory={distribution.caches}", f"--http-port={o.http_port}",
                f"--grpc-port={o.grpc_port}", f"--metrics-port={o.metrics_port}", "--exit-on-error=true",
                "--disable-auto-complete-config", "--strict-readiness=true",
                # one region prefix per server: several servers on one host must not share regions
                f"--backend-config=python,shm-region-prefix-name=dfr{os.getpid()}x{secrets.token_hex(4)}",
                f"--backend-config=python,shm-default-byte-size={BACKEND_SHM_BYTES}",
                f"--grpc-restricted-protocol={restricted}", f"--http-restricted-api={restricted}"]

    def _wait_ready(self, timeout_s: float) -> None:
        """Until the model answers ready; a server that exits or a stub that hangs becomes a clear error."""
        o = self.options
        url = f"http://127.0.0.1:{o.http_port}/v2/models/{self.model.name}/ready"
        deadline = time.monotonic() + timeout_s
        while True:
            code = self._process.poll()
            if code is not None:
                reason = f"tritonserver exited with status {code} while loading the model"
                break
            try:
                with urllib.request.urlopen(url, timeout=2):
                    return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                reason = f"the model did not load within {timeout_s:g} s"
                break
            time.sleep(0.2)
        raise RuntimeError(
            f"Triton could not serve {self.path}: {reason}. The Python backend stub needs this interpreter's "
            f"libpython ({python_library_dir()}, put on LD_LIBRARY_PATH) and free ports "
            f"{o.http_port}/{o.grpc_port}/{o.metrics_port}; the server log above says more"
        )

    def wait(self, poll_s: float = 1.0) -> bool:
        """Serve until interrupted (KeyboardInterrupt) or until the server dies; True if it died."""
        try:
            while self._process.poll() is None:
                time.sleep(poll_s)
            return True
        finally:
            self.stop()

    def stop(self) -> None:
        """SIGTERM (Triton unloads the model and ends the stubs), a kill after 30 s; safe to call twice."""
        terminate(self._process, grace_s=30)
        self._workdir.cleanup()


def terminate(process: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM, so Triton can unload its models and end its stubs; a kill if that takes over `grace_s`."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


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
        terminate(self.process, grace_s=60)
