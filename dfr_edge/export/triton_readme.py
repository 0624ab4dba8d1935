"""The README written into every Triton model repository: what is in it and how to serve it."""

REPOSITORY_README = """\
# dfr-edge Triton model repository

Written by `dfr-export BUNDLE --triton REPO`. Each model folder holds one `config.pbtxt` and one
numbered folder per export (`1/model.onnx`, `2/model.onnx`, ...). Triton serves the newest version
(`version_policy: latest 1`); older folders stay for a rollback (delete the newest folder, or set
`version_policy { specific { versions: [N] } }`). A `NAME_trt` folder, when present, holds TensorRT
plans (`platform: tensorrt_plan`, one file per GPU compute capability in `cc_model_filenames`).

Inputs and outputs (the same for every version and for `dfr-serve`):

| tensor | type | shape (per request) |
|---|---|---|
| `image` | UINT8 | N x H x W x 3, BGR, the model's H x W |
| `anomaly_map` | FP32 | N x H x W |
| `score` | FP32 | N x 1 |

The bundle's `dfr.json` (thresholds, image size, model identity) is in the config's `parameters`
under `dfr.json`; `load_detector("triton://HOST:8001/NAME")` reads it from the server.

## Start the server (NGC container, one GPU)

```
docker run --rm --gpus '"device=0"' --shm-size 1g \\
  -p 8000:8000 -p 8001:8001 -p 8002:8002 \\
  -v $PWD/REPO:/models:ro -v trt-cache:/trt-cache \\
  nvcr.io/nvidia/tritonserver:<yy.mm>-py3 \\
  tritonserver --model-repository=/models --strict-readiness=true
```

8000 is HTTP, 8001 gRPC, 8002 Prometheus metrics. `--gpus all` serves on every GPU (one instance
group per GPU). The `trt-cache` volume keeps the engines the TensorRT accelerator builds on first
load (minutes), so a restart does not rebuild them. Without a GPU, export with `--kind cpu` and
drop `--gpus`.

## Which container release

A TensorRT plan only loads in a container with the TensorRT version it was built with, and the
ONNX Runtime in the container must know the graph's opset (17): any release from 23.xx on does.
Check a release's versions before choosing it:

```
docker run --rm nvcr.io/nvidia/tritonserver:<yy.mm>-py3 bash -c \\
  'ls /opt/tritonserver/backends/onnxruntime; dpkg -l | grep -E "libnvinfer[0-9]+ "'
```

and the "Triton Inference Server Release yy.mm" notes (their container version table lists
TensorRT; the Deep Learning Frameworks Support Matrix lists the rest). Not verified here (no
Docker or GPU on the machine that wrote this): TensorRT 10.3 (the JetPack 6 version) came with
24.08/24.09, TensorRT 10.x with every 24.xx and 25.xx release, ONNX Runtime 1.18-1.23 in those.
Build plans inside the same container release you serve with (`dfr-export --engine` there, or the
TensorRT accelerator above, which builds on the server itself).
"""
