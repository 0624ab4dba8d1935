"""The `triton` backend: the fused graph on a Triton server, behind the same `Backend` interface.

    load_detector("triton://host:8001/dfr")         gRPC (default)
    load_detector("triton+http://host:8000/dfr/2")  HTTP, pinned to version 2

Thresholds and image size come from the server's model config (dfr.json in its parameters), so a
remote detector decides exactly like a local one. On the same host, frames and results travel
through system shared memory instead of the socket. tritonclient is imported lazily.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import threading
import weakref
from dataclasses import dataclass
from urllib.parse import urlsplit

import numpy as np

from dfr_edge import manifest as manifest_io
from dfr_edge.runtime.backend import check_images
from dfr_edge.runtime.triton.model import EXPORT_PARAMETER, INPUT, MANIFEST_PARAMETER, MAP_OUTPUT, SCORE_OUTPUT

log = logging.getLogger(__name__)
SCHEMES = {"triton": "grpc", "triton+grpc": "grpc", "triton+http": "http"}
DEFAULT_PORTS = {"grpc": 8001, "http": 8000}
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}
_region_ids = itertools.count()


class TritonServerError(RuntimeError):
    """The server answered, but not as a dfr-edge model should (not ready, wrong model, bad request)."""


class TritonUnavailableError(TritonServerError):
    """No answer from the server (down, unreachable, timed out): worth retrying later."""


@dataclass(frozen=True)
class TritonAddress:
    protocol: str  # "grpc" or "http"
    host: str
    port: int
    model: str
    version: str = ""  # "" = the version the server's policy picks

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def is_local(self) -> bool:
        return self.host in LOCAL_HOSTS

    def __str__(self) -> str:
        scheme = "triton" if self.protocol == "grpc" else "triton+http"
        return f"{scheme}://{self.endpoint}/{self.model}" + (f"/{self.version}" if self.version else "")


def is_triton_url(text: object) -> bool:
    return isinstance(text, str) and text.split("://", 1)[0] in SCHEMES and "://" in text


def parse_url(url: str) -> TritonAddress:
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ValueError(f"{url}: not a Triton URL; use triton://HOST:PORT/MODEL (gRPC) or triton+http://...")
    protocol = SCHEMES[parts.scheme]
    path = [p for p in parts.path.split("/") if p]
    if not parts.hostname or not 1 <= len(path) <= 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError(f"{url}: expected {parts.scheme}://HOST[:PORT]/MODEL[/VERSION]")
    return TritonAddress(protocol, parts.hostname, parts.port or DEFAULT_PORTS[protocol], path[0],
                         path[1] if len(path) == 2 else "")


def _import_client(protocol: str):
    try:
        if protocol == "grpc":
            import tritonclient.grpc as client
        else:
            import tritonclient.http as client
        from tritonclient.utils import InferenceServerException
    except (ImportError, RuntimeError) as exc:  # tritonclient raises RuntimeError when an extra is missing
        extra = "grpcio" if protocol == "grpc" else "'tritonclient[http]'"
        raise ImportError(f"the triton backend needs tritonclient and {extra}: pip install 'dfr-edge[triton]' "
                          f"({exc})") from exc
    return client, InferenceServerException


class TritonBackend:
    def __init__(self, url: str, *, timeout_s: float = 30.0, shared_memory: bool | None = None,
                 max_batch: int | None = None):
        self.address = parse_url(url)
        self.timeout_s = timeout_s
        self._client_module, self._server_exception = _import_client(self.address.protocol)
        self._client = self._connect()
        config = self._checked_config()
        self.manifest = manifest_io.loads(_parameter(config, MANIFEST_PARAMETER, self.address),
                                          f"{self.address} {MANIFEST_PARAMETER}")
        self.export_info = json.loads(_parameter(config, EXPORT_PARAMETER, self.address) or "{}")
        self.height, self.width = self.manifest["input"]["height"], self.manifest["input"]["width"]
        _check_io(config, self.height, self.width, self.address)
        self.max_batch = int(config.get("max_batch_size", 0)) or 1  # the server's limit: larger calls are split
        if max_batch is not None:
            self.max_batch = min(self.max_batch, max_batch)
        self._shm = None
        if shared_memory or (shared_memory is None and self.address.is_local):
            try:
                self._shm = _SharedMemory(self, self.max_batch)
            except TritonServerError as exc:
                if shared_memory:  # asked for explicitly: say why not
                    raise
                # e.g. a server in a container without --ipc=host: same results through the socket
                log.warning("shared memory with %s not available (%s); sending frames over the socket",
                            self.address.endpoint, exc)
        self.name = f"triton:{self.address}" + (" (shared memory)" if self._shm else "")
        self.path = str(self.address)  # Backend.path: where the model is; here a URL, not a file

    def _connect(self):
        a = self.address
        if a.protocol == "grpc":
            client = self._client_module.InferenceServerClient(a.endpoint)
        else:
            client = self._client_module.InferenceServerClient(a.endpoint, connection_timeout=self.timeout_s,
                                                               network_timeout=self.timeout_s)
        live = self._call(client.is_server_live, what="reach the server")
        if not live:
            raise TritonUnavailableError(f"Triton server {a.endpoint} is not live yet; retry when it is")
        if not self._call(client.is_model_ready, a.model, a.version, what="ask for the model"):
            raise TritonServerError(f"model {a.model!r} is not ready on {a.endpoint} ({self._known_models(client)}); "
                                    f"check the name and the server log")
        return client

    def _known_models(self, client) -> str:
        """The server's model names, where it lets us list them (dfr-serve restricts that endpoint)."""
        try:
            index = self._call(client.get_model_repository_index, what="list the models")
        except TritonServerError:
            return "the server does not list its models"
        names = [m.get("name") if isinstance(m, dict) else m.name for m in _index(index)]
        return "models there: " + (", ".join(names) or "none")

    def _checked_config(self) -> dict:
        a = self.address
        config = self._call(self._client.get_model_config, a.model, a.version, what="read the model config")
        if self.address.protocol == "grpc":
            from google.protobuf import json_format

            config = json_format.MessageToDict(config.config, preserving_proto_field_name=True)
        return config

    def _call(self, method, *args, what: str, **kwargs):
        """One client call with its exceptions turned into ours (server down, timeout, refusal)."""
        a = self.address
        if a.protocol == "grpc":
            kwargs.setdefault("client_timeout", self.timeout_s)
        try:
            return method(*args, **kwargs)
        except self._server_exception as exc:
            message = exc.message() or str(exc)
            status = str(exc.status() or "")
            if "DEADLINE_EXCEEDED" in status or "Deadline Exceeded" in message:
                raise TritonUnavailableError(f"Triton server {a.endpoint} did not answer within "
                                             f"{self.timeout_s:g} s (trying to {what})") from None
            if "UNAVAILABLE" in status or "failed to connect" in message or "Socket closed" in message:
                raise TritonUnavailableError(f"Triton server {a.endpoint} is not reachable (trying to {what}: "
                                             f"{message.strip()}); start it (dfr-serve, or the NGC container) "
                                             f"or check the address") from None
            raise TritonServerError(f"{a}: the server refused to {what}: {message.strip()}") from None
        except (OSError, TimeoutError) as exc:  # HTTP client: refused connections, socket timeouts
            raise TritonUnavailableError(f"Triton server {a.endpoint} is not reachable (trying to {what}: "
                                         f"{exc}); start it or check the address") from None

    def infer(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        check_images(images, self.height, self.width)
        images = np.ascontiguousarray(images)
        chunks = [self._infer_chunk(images[i:i + self.max_batch]) for i in range(0, len(images), self.max_batch)]
        if len(chunks) == 1:  # the usual camera call: no copy of the map
            return chunks[0]
        return np.concatenate([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks])

    def _infer_chunk(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m = self._client_module
        image = m.InferInput(INPUT, list(images.shape), "UINT8")
        outputs = [m.InferRequestedOutput(MAP_OUTPUT), m.InferRequestedOutput(SCORE_OUTPUT)]
        if self._shm is not None:
            return self._shm.infer(images, image, outputs)
        image.set_data_from_numpy(images)
        result = self._request(image, outputs)
        return result.as_numpy(MAP_OUTPUT), result.as_numpy(SCORE_OUTPUT).reshape(-1)

    def _request(self, image, outputs):
        a = self.address
        return self._call(self._client.infer, a.model, [image], model_version=a.version, outputs=outputs,
                          what=f"run {a.model}")

    def close(self) -> None:
        if self._shm is not None:
            self._shm.close()
        self._client.close()


class _SharedMemory:
    """System shared memory regions for one batch in and out, registered with a server on this host."""

    def __init__(self, backend: TritonBackend, max_batch: int):
        import tritonclient.utils.shared_memory as shm

        self._backend, self._shm, self._lock = backend, shm, threading.Lock()
        h, w = backend.height, backend.width
        self.sizes = {INPUT: max_batch * h * w * 3, MAP_OUTPUT: max_batch * h * w * 4, SCORE_OUTPUT: max_batch * 4}
        prefix = f"dfr_{os.getpid()}_{next(_region_ids)}"
        self.names = {tensor: f"{prefix}_{tensor}" for tensor in self.sizes}
        self.handles = {tensor: shm.create_shared_memory_region(self.names[tensor], "/" + self.names[tensor], size)
                        for tensor, size in self.sizes.items()}
        self._finalizer = weakref.finalize(self, _release, backend._client, shm, dict(self.names),
                                           dict(self.handles))
        try:
            self.register()
        except TritonServerError:
            self.close()  # free the regions made here before giving up on shared memory
            raise

    def register(self) -> None:
        """Tell the server about the regions (again after it restarted: it forgets them)."""
        for tensor, size in self.sizes.items():
            name = self.names[tensor]
            self._backend._call(self._backend._client.register_system_shared_memory, name, "/" + name, size,
                                what="register shared memory (is the server on this host? pass shared_memory=False)")

    def infer(self, images: np.ndarray, image, outputs) -> tuple[np.ndarray, np.ndarray]:
        n, h, w = len(images), self._backend.height, self._backend.width
        with self._lock:  # one set of regions per backend: one request in flight at a time
            self._shm.set_shared_memory_region(self.handles[INPUT], [images])
            image.set_shared_memory(self.names[INPUT], images.nbytes)
            outputs[0].set_shared_memory(self.names[MAP_OUTPUT], n * h * w * 4)
            outputs[1].set_shared_memory(self.names[SCORE_OUTPUT], n * 4)
            try:
                self._backend._request(image, outputs)
            except TritonServerError as exc:
                if "shared memory" not in str(exc) or isinstance(exc, TritonUnavailableError):
                    raise
                self.register()  # a restarted server: same regions, registered anew
                self._backend._request(image, outputs)
            amap = self._shm.get_contents_as_numpy(self.handles[MAP_OUTPUT], np.float32, [n, h, w]).copy()
            score = self._shm.get_contents_as_numpy(self.handles[SCORE_OUTPUT], np.float32, [n]).copy()
        return amap, score

    def close(self) -> None:
        self._finalizer()


def _release(client, shm, names: dict, handles: dict) -> None:
    for tensor, handle in handles.items():
        try:
            client.unregister_system_shared_memory(names[tensor])
        except Exception as exc:  # noqa: BLE001 - the server may be gone; the local region is still ours to free
            log.debug("could not unregister %s: %s", names[tensor], exc)
        shm.destroy_shared_memory_region(handle)


def _index(index) -> list:
    return list(index.models) if hasattr(index, "models") else list(index)


def _parameter(config: dict, key: str, address: TritonAddress) -> str:
    value = config.get("parameters", {}).get(key, {}).get("string_value")
    if value is None and key == MANIFEST_PARAMETER:
        raise TritonServerError(f"{address}: the model config carries no {key!r} parameter: not a dfr-edge model "
                                f"(export it with dfr-export --triton, or serve it with dfr-serve)")
    return value


def _check_io(config: dict, height: int, width: int, address: TritonAddress) -> None:
    """The served model must take and give what the fused graph does (contract 1), or we refuse it."""
    expected = {INPUT: ("TYPE_UINT8", [height, width, 3]), MAP_OUTPUT: ("TYPE_FP32", [height, width]),
                SCORE_OUTPUT: ("TYPE_FP32", [1])}
    served = {t["name"]: (t.get("data_type"), [int(d) for d in t.get("dims", [])])
              for t in config.get("input", []) + config.get("output", [])}
    if served != expected or int(config.get("max_batch_size", 0)) < 1:
        raise TritonServerError(
            f"{address} does not serve the dfr-edge fused graph: it has {served} (max_batch_size "
            f"{config.get('max_batch_size', 0)}), expected {expected} with batching"
        )
