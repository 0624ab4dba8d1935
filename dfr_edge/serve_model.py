"""The model dfr-serve's Triton Python backend runs: our ONNX Runtime backend inside the backend's stub.

Loaded by the `model.py` that `dfr_edge.serve_repository` writes into the generated repository. Running
the session in the stub process itself keeps one hop off every request: tritonserver hands the batch
to the stub over shared memory and gets the outputs back the same way, with no further process
(PyTriton's proxy put a socket and a second process between the stub and the session: ~6-9 ms here).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dfr_edge.runtime.onnxrt import OnnxRuntimeBackend
from dfr_edge.runtime.triton.model import INPUT, MAP_OUTPUT, SCORE_OUTPUT

SETTINGS_FILE = "serve.json"  # in the version folder: what to load; not in config.pbtxt, so clients see the export's


class TritonPythonModel:
    """One model instance (one stub process, one ONNX Runtime session)."""

    def initialize(self, args: dict) -> None:
        import triton_python_backend_utils as pb_utils  # exists only inside the stub

        self._pb = pb_utils
        settings = json.loads((Path(args["model_repository"]) / args["model_version"] / SETTINGS_FILE).read_text())
        # Instances share the cores: idle ones must not spin on them.
        self.backend = OnnxRuntimeBackend(Path(settings["model"]), provider=settings["provider"],
                                          threads=settings["threads"], max_batch=settings["max_batch"], spin=False)

    def execute(self, requests: list) -> list:
        """The requests the dynamic batcher grouped: one session run, one response per request."""
        frames = [self._pb.get_input_tensor_by_name(r, INPUT).as_numpy() for r in requests]
        amap, score = self.backend.infer(frames[0] if len(frames) == 1 else np.concatenate(frames))
        responses, start = [], 0
        for batch in frames:
            end = start + len(batch)
            responses.append(self._pb.InferenceResponse(output_tensors=[
                self._pb.Tensor(MAP_OUTPUT, amap[start:end]),
                self._pb.Tensor(SCORE_OUTPUT, score[start:end].reshape(-1, 1))]))  # served as N x 1
            start = end
        return responses
