"""Run a TensorRT engine through the name-based API (TensorRT 10.x and 11.x alike).

Per call: the uint8 frames are copied as they are into a pinned host buffer, then to the device
(or not at all with mapped memory on Jetson), `set_input_shape` -> `set_tensor_address` for every
I/O tensor -> `execute_async_v3` on the one stream -> outputs back -> one synchronize. Buffers are
allocated once for the profile's largest batch and reused. With `cuda_graphs`, the first call at
a batch size runs normally and then captures that enqueue as a CUDA graph; later calls at that
size launch the graph. A capture that fails (binding without capture, a TensorRT model that
needs the host mid-run) is logged once and that size keeps running without a graph.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dfr_edge.runtime.backend import check_images
from dfr_edge.runtime.cuda import CudaApi, CudaGraphUnsupported, load_cuda
from dfr_edge.runtime.tensorrt import import_tensorrt
from dfr_edge.runtime.tensorrt.engine_info import check_compatible, engine_key, read_sidecar, rebuild_command

log = logging.getLogger(__name__)
INPUT, OUTPUTS = "image", ("anomaly_map", "score")
# TensorRT DataType member name -> numpy dtype (by name: enum values were renumbered across versions).
NUMPY_DTYPES = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "INT64": np.int64,
                "UINT8": np.uint8, "BOOL": np.bool_}


@dataclass
class Binding:
    name: str
    host: np.ndarray  # pinned, shaped for the profile's max batch
    device_ptr: int


class TensorRTBackend:
    def __init__(self, path: Path, cuda: CudaApi | None = None, cuda_binding: str | None = None, device: int = 0,
                 cuda_graphs: bool = False, mapped_memory: bool | None = None, time_gpu: bool = False):
        """`mapped_memory=None` maps pinned memory on integrated GPUs (Jetson) and copies elsewhere."""
        path = Path(path)
        info = read_sidecar(path)
        trt = import_tensorrt()
        self.cuda = cuda if cuda is not None else load_cuda(cuda_binding, device)
        self.device = self.cuda.device_info()
        check_compatible(info, trt.__version__, self.device, path)
        self.path, self.manifest = path, info["dfr"]
        self.export_info = {"engine": info["key"], **info.get("build", {})}
        self.height, self.width = self.manifest["input"]["height"], self.manifest["input"]["width"]
        self.name = f"tensorrt:{trt.__version__}:{self.cuda.name}"
        self.mapped = self.device.integrated if mapped_memory is None else bool(mapped_memory)
        self.cuda_graphs, self.time_gpu = cuda_graphs, time_gpu
        self.last_gpu_ms: float | None = None

        self.engine = self._deserialize(trt, info)
        self._check_io()
        low, _, high = self.engine.get_tensor_profile_shape(INPUT, 0)
        self.min_batch, self.max_batch = int(low[0]), int(high[0])
        self.context = self.engine.create_execution_context()
        self.stream = self.cuda.create_stream()
        self._handle = self.cuda.stream_handle(self.stream)
        self.bindings = {name: self._allocate(name) for name in (INPUT, *OUTPUTS)}
        self._graphs: dict[int, object] = {}
        self._no_graph: set[int] = set()
        self._events = (self.cuda.create_event(), self.cuda.create_event()) if time_gpu else None

    def _deserialize(self, trt, info: dict):
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)  # kept alive as long as the engine
        key = engine_key(info)
        if key.version_compatible:
            self._runtime.engine_host_code_allowed = True  # the plan carries its own lean runtime
        if key.dla_core is not None:
            self._runtime.DLA_core = key.dla_core
        engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if engine is None:
            raise RuntimeError(f"TensorRT could not deserialize {self.path} (see its log above); rebuild it with "
                               f"{rebuild_command(info)}")
        return engine

    def _check_io(self) -> None:
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        expected = {INPUT: ("INPUT", "UINT8"), OUTPUTS[0]: ("OUTPUT", "FLOAT"), OUTPUTS[1]: ("OUTPUT", "FLOAT")}
        found = {n: (self.engine.get_tensor_mode(n).name, self.engine.get_tensor_dtype(n).name) for n in names}
        if found != expected:
            raise ValueError(f"{self.path.name} does not have the dfr-edge I/O (image uint8 in; anomaly_map, score "
                             f"float32 out): it has {found}; rebuild it from the bundle with dfr-export --engine")

    def _allocate(self, name: str) -> Binding:
        shape = tuple(int(d) for d in self.engine.get_tensor_shape(name))
        shape = (self.max_batch, *shape[1:])  # the batch dim is dynamic (-1) in the engine
        dtype = NUMPY_DTYPES[self.engine.get_tensor_dtype(name).name]
        host = self.cuda.alloc_host(shape, dtype, mapped=self.mapped)
        device_ptr = host.device_ptr if self.mapped else self.cuda.alloc_device(host.array.nbytes)
        return Binding(name, host.array, device_ptr)

    def infer(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        check_images(images, self.height, self.width)
        parts = [self._run(images[i : i + self.max_batch]) for i in range(0, len(images), self.max_batch)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def _run(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = len(batch)
        size = max(n, self.min_batch)  # a fixed-batch engine (DLA) gets zero padding
        image = self.bindings[INPUT]
        image.host[:n] = batch
        image.host[n:size] = 0
        if not self.mapped:
            self.cuda.copy_to_device(image.device_ptr, image.host[:size], self.stream)
        if self._events:
            self.cuda.record_event(self._events[0], self.stream)
        graph = self._graphs.get(size)
        if graph is not None:
            self.cuda.launch_graph(graph, self.stream)
        else:
            self._enqueue(size)
        if self._events:
            self.cuda.record_event(self._events[1], self.stream)
        if graph is None and self.cuda_graphs and size not in self._no_graph:
            self._capture(size)
        outputs = [self.bindings[name] for name in OUTPUTS]
        if not self.mapped:
            for out in outputs:
                self.cuda.copy_to_host(out.host[:size], out.device_ptr, self.stream)
        self.cuda.synchronize(self.stream)
        if self._events:
            self.last_gpu_ms = self.cuda.elapsed_ms(*self._events)
        return outputs[0].host[:n].copy(), outputs[1].host[:n].copy()

    def _enqueue(self, size: int) -> None:
        if not self.context.set_input_shape(INPUT, (size, self.height, self.width, 3)):
            raise ValueError(f"batch {size} is outside the engine's profile {self.min_batch}..{self.max_batch}")
        for binding in self.bindings.values():
            self.context.set_tensor_address(binding.name, binding.device_ptr)
        if not self.context.execute_async_v3(self._handle):
            raise RuntimeError(f"TensorRT execute_async_v3 failed on {self.path.name} (see its log above)")

    def _capture(self, size: int) -> None:
        def enqueue() -> None:
            if not self.context.execute_async_v3(self._handle):
                raise CudaGraphUnsupported("execute_async_v3 failed during stream capture")

        try:
            self._graphs[size] = self.cuda.capture_graph(self.stream, enqueue)
        except CudaGraphUnsupported as exc:
            self._no_graph.add(size)
            log.warning("CUDA graph capture at batch %d failed (%s); running without a graph", size, exc)

    def close(self) -> None:
        self._graphs.clear()
        self.cuda.free()
