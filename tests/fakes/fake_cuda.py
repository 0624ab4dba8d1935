"""A fake of dfr_edge.runtime.cuda.CudaApi: numpy arrays are device memory, streams run at once.

Pointers are integers into registered numpy buffers; mapped host buffers register the host array
itself, so zero-copy really is zero-copy. Stream capture records the enqueued work instead of
running it, and a graph launch replays it. Every call is appended to `calls`.
"""

from __future__ import annotations

import time

import numpy as np

from dfr_edge.runtime.cuda import CudaGraphUnsupported, DeviceInfo, HostBuffer


class FakeStream:
    def __init__(self, handle: int):
        self.handle = handle


class FakeCuda:
    name = "fake-cuda"

    def __init__(self, device: DeviceInfo | None = None, capture_supported: bool = True, calls: list | None = None):
        self.device = device or DeviceInfo("NVIDIA H200", (9, 0), False)
        self.capture_supported = capture_supported
        self.calls = calls if calls is not None else []
        self.buffers: dict[int, np.ndarray] = {}  # base pointer -> raw uint8 memory
        self.host_allocations: list[tuple[tuple, np.dtype, bool]] = []
        self.device_allocations: list[int] = []
        self._next = 0x1000
        self._capture: dict[int, list] = {}
        self.freed = False

    def _register(self, raw: np.ndarray) -> int:
        ptr = self._next
        self.buffers[ptr] = raw
        self._next += (raw.nbytes // 256 + 2) * 256
        return ptr

    def view(self, ptr: int, shape: tuple, dtype) -> np.ndarray:
        """The device memory at `ptr` seen as an array (what a kernel would read or write)."""
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        for base, raw in self.buffers.items():
            if base <= ptr and ptr + nbytes <= base + raw.nbytes:
                return raw[ptr - base : ptr - base + nbytes].view(dtype).reshape(shape)
        raise ValueError(f"invalid device pointer {ptr:#x} ({nbytes} bytes)")

    def device_info(self) -> DeviceInfo:
        return self.device

    def alloc_device(self, nbytes: int) -> int:
        self.device_allocations.append(nbytes)
        return self._register(np.zeros(nbytes, np.uint8))

    def alloc_host(self, shape, dtype, mapped=False) -> HostBuffer:
        array = np.zeros(shape, dtype)
        self.host_allocations.append((tuple(shape), np.dtype(dtype), mapped))
        return HostBuffer(array, self._register(array.reshape(-1).view(np.uint8)) if mapped else None)

    def create_stream(self) -> FakeStream:
        return FakeStream(0x5000 + len(self.calls))

    def stream_handle(self, stream: FakeStream) -> int:
        return stream.handle

    def capturing(self, handle: int) -> bool:
        return handle in self._capture

    def enqueue(self, handle: int, work) -> None:
        if handle in self._capture:
            self._capture[handle].append(work)
        else:
            work()

    def synchronize(self, stream: FakeStream) -> None:
        self.calls.append(("synchronize", stream.handle))

    def copy_to_device(self, dst: int, src: np.ndarray, stream: FakeStream) -> None:
        self.calls.append(("copy_to_device", dst, src.nbytes))
        self.enqueue(stream.handle, lambda: self.view(dst, src.shape, src.dtype).__setitem__(..., src))

    def copy_to_host(self, dst: np.ndarray, src: int, stream: FakeStream) -> None:
        self.calls.append(("copy_to_host", src, dst.nbytes))
        self.enqueue(stream.handle, lambda: dst.__setitem__(..., self.view(src, dst.shape, dst.dtype)))

    def create_event(self) -> list:
        return [0.0]

    def record_event(self, event: list, stream: FakeStream) -> None:
        event[0] = time.perf_counter()

    def elapsed_ms(self, start: list, end: list) -> float:
        return (end[0] - start[0]) * 1e3

    def capture_graph(self, stream: FakeStream, enqueue):
        if not self.capture_supported:
            raise CudaGraphUnsupported("stream capture is not supported by this fake")
        self.calls.append(("begin_capture", stream.handle))
        self._capture[stream.handle] = []
        try:
            enqueue()
        finally:
            work = self._capture.pop(stream.handle)
        self.calls.append(("end_capture", stream.handle))
        return work

    def launch_graph(self, graph: list, stream: FakeStream) -> None:
        self.calls.append(("launch_graph", stream.handle))
        for work in graph:
            work()

    def free(self) -> None:
        self.freed = True
