"""The cost of serving through Triton (dfr-serve) against running the same ONNX file locally.

    python benchmarks/triton_serving.py --model BUNDLE/model.onnx [--data ../shared/datasets/mvtec_ad/bottle]

Run it with the serve venv's python (PyTriton and tritonclient[all]: see README "Scale-out"); it starts
dfr-serve itself on free ports (by default 2 instances x 1 ONNX Runtime thread, which served better here
than 1 x 2 threads; max batch 8, dfr-serve's default queue delay 0) and measures, client and server on this
machine:
- parity: every test image of --data through HTTP, gRPC and gRPC + shared memory vs local ONNX Runtime
  (max abs difference);
- batch-1 latency, model only (frames already at model size): a local session (same threads) and the
  server over HTTP, gRPC and gRPC + shared memory, interleaved per round; medians, overhead = minus local;
  and where the served requests spent their time by the server's own statistics (queue, input,
  inference in the Python-backend stub, output: means per request over those rounds), and the CPU
  time each process on the path spends per sequential gRPC + shared-memory request (the client,
  tritonserver, the stubs) against a local call's: on 2 cores every such millisecond is latency;
- throughput of 4 concurrent gRPC + shared-memory clients sending single frames, against the best
  local throughput on the same cores (2 sessions x 1 thread in 2 threads, or 1 session x 2 threads at
  batch 8), and the batch sizes the server formed (its statistics).
Prints a table and writes benchmarks/results/triton_serving.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from dfr_edge import __version__
from dfr_edge.data.mvtec import load_test_arrays, open_dataset
from dfr_edge.geometry import Geometry
from dfr_edge.report import format_table, machine_info, write_json
from dfr_edge.runtime.onnxrt import OnnxRuntimeBackend
from dfr_edge.runtime.triton.client import TritonBackend
from dfr_edge.runtime.triton.model import SERVE_QUEUE_DELAY_US
from dfr_edge.serve import ServeProcess

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "datasets" / "mvtec_ad" / "bottle"
CLIENTS = 4


def latency_ms(runners: dict, frames: np.ndarray, rounds: int) -> dict[str, float]:
    """Median batch-1 latency per runner, the runners taking turns so machine noise hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in runners}
    for r in range(rounds):
        frame = frames[r % len(frames)][None]
        for name, infer in runners.items():
            start = time.perf_counter()
            infer(frame)
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(values) for name, values in times.items()}


def parallel_throughput(workers: list, frames: np.ndarray, batch: int, seconds: float) -> float:
    """Images per second with one thread per worker (an infer callable), each sending `batch` frames."""
    counts = [0] * len(workers)
    stop = time.perf_counter() + seconds

    def run(i: int) -> None:
        k = i
        while time.perf_counter() < stop:
            start = k % (len(frames) - batch + 1)
            workers[i](frames[start:start + batch])
            counts[i] += batch
            k += 1

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(workers))]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - began)


def statistics_of(server: ServeProcess) -> dict:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc}")
    return client.get_inference_statistics("dfr", as_json=True)["model_stats"][0]


def batch_histogram(server: ServeProcess) -> dict[int, int]:
    return {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in statistics_of(server)["batch_stats"]}


STAGES = ("success", "queue", "compute_input", "compute_infer", "compute_output")


def stage_totals(server: ServeProcess) -> dict[str, tuple[int, int]]:
    """(count, ns) per stage of Triton's inference statistics: success = request received to response sent."""
    stats = statistics_of(server)["inference_stats"]
    return {k: (int(stats[k].get("count", 0)), int(stats[k].get("ns", 0))) for k in STAGES}


def stage_ms(before: dict, after: dict) -> dict[str, float]:
    """Mean milliseconds per request in each stage between two stage_totals()."""
    requests = after["success"][0] - before["success"][0]
    return {k: (after[k][1] - before[k][1]) / requests / 1e6 for k in STAGES}


def children(pid: int) -> list[int]:
    return [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]


def process_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def cpu_ms_per_request(server: ServeProcess, runners: dict, frames: np.ndarray, rounds: int) -> dict[str, float]:
    """CPU milliseconds per batch-1 request: this process (the local session with its threads, or the
    client with gRPC's), then tritonserver and its stubs (children of dfr-serve) while the served runner
    ran. The runners take turns, not interleaved: only one of them works at a time. /proc ticks are 10 ms."""
    (triton,) = children(server.process.pid)
    stubs = children(triton)
    result = {}
    for name, infer in runners.items():
        before = time.process_time(), process_cpu_s(triton), sum(map(process_cpu_s, stubs))
        for r in range(rounds):
            infer(frames[r % len(frames)][None])
        after = time.process_time(), process_cpu_s(triton), sum(map(process_cpu_s, stubs))
        result[f"{name}, this process"] = (after[0] - before[0]) / rounds * 1e3
        if name != "local":
            result["tritonserver"] = (after[1] - before[1]) / rounds * 1e3
            result["stubs (ONNX Runtime inside)"] = (after[2] - before[2]) / rounds * 1e3
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="exported ONNX file to serve")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="MVTec-layout folder (its test split is used)")
    p.add_argument("--rounds", type=int, default=60, help="batch-1 requests per runner")
    p.add_argument("--seconds", type=float, default=10.0, help="length of each throughput run")
    p.add_argument("--instances", type=int, default=2, help="served model instances")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads per served instance (and local)")
    p.add_argument("--queue-delay-us", type=int, default=SERVE_QUEUE_DELAY_US,
                   help="dfr-serve's batching wait (0: latency of the serving path alone)")
    p.add_argument("--serve-python", default=sys.executable, help="python that has dfr-edge[serve]")
    p.add_argument("--out", type=Path, default=HERE / "results" / "triton_serving.json")
    args = p.parse_args()

    local = OnnxRuntimeBackend(args.model, threads=args.threads)
    test = load_test_arrays(open_dataset(args.data), Geometry(local.height, local.width))  # model-size images
    frames = test.images
    with tempfile.TemporaryDirectory() as tmp:
        server = ServeProcess(args.serve_python, args.model, Path(tmp) / "serve.log", "--threads", str(args.threads),
                              "--instances", str(args.instances),
                              "--queue-delay-us", str(args.queue_delay_us))
        try:
            remote = {"http": TritonBackend(server.url("http"), shared_memory=False),
                      "grpc": TritonBackend(server.url(), shared_memory=False),
                      "grpc+shm": TritonBackend(server.url(), shared_memory=True)}
            lmap, lscore = local.infer(frames)
            parity = {"images": len(frames)}
            for protocol, backend in remote.items():
                rmap, rscore = backend.infer(frames)
                parity[protocol] = {"map_max_abs": float(np.abs(rmap - lmap).max()),
                                    "score_max_abs": float(np.abs(rscore - lscore).max())}
            latency_ms({"warm-up": remote["grpc"].infer}, frames, 5)
            stages_before = stage_totals(server)
            latency = latency_ms({"local": local.infer, **{k: b.infer for k, b in remote.items()}}, frames,
                                 args.rounds)
            server_ms = stage_ms(stages_before, stage_totals(server))
            cpu_ms = cpu_ms_per_request(server, {"local": local.infer, "grpc+shm": remote["grpc+shm"].infer}, frames,
                                        max(args.rounds, 60))
            before = batch_histogram(server)
            clients = [TritonBackend(server.url(), shared_memory=True).infer for _ in range(CLIENTS)]
            served = parallel_throughput(clients, frames, 1, args.seconds)
            after = batch_histogram(server)
            batches = {size: after[size] - before.get(size, 0) for size in sorted(after)
                       if after[size] - before.get(size, 0)}
        finally:
            server.stop()
    one_thread = [OnnxRuntimeBackend(args.model, threads=1).infer for _ in range(2)]
    two_threads = OnnxRuntimeBackend(args.model, threads=2).infer
    local_best = {"2 sessions x 1 thread, batch 1": parallel_throughput(one_thread, frames, 1, args.seconds),
                  "1 session x 2 threads, batch 8": parallel_throughput([two_threads], frames, 8, args.seconds)}
    best = max(local_best.values())

    rows = [[f"parity {k} (max abs map / score)", f"{v['map_max_abs']:g} / {v['score_max_abs']:g}",
             f"{parity['images']} test images"] for k, v in parity.items() if k != "images"]
    rows += [[f"batch-1 latency {k}", f"{v:.2f} ms", "" if k == "local" else f"overhead {v - latency['local']:+.2f} ms"]
             for k, v in latency.items()]
    rows += [[f"server side, {k}", f"{v:.2f} ms", "mean per batch-1 request (Triton statistics)"]
             for k, v in server_ms.items()]
    rows += [[f"CPU time, {k}", f"{v:.2f} ms", "per sequential batch-1 request (/proc, 10 ms ticks)"]
             for k, v in cpu_ms.items()]
    rows += [[f"local throughput, {k}", f"{v:.1f} img/s", ""] for k, v in local_best.items()]
    rows.append([f"served throughput, {CLIENTS} clients", f"{served:.1f} img/s",
                 f"{served / best:.0%} of best local; batches formed {batches}"])
    print(format_table(["measure", "value", "note"], rows))
    write_json(args.out, {
        "benchmark": "triton_serving", "dfr_edge": __version__, "machine": machine_info(),
        "model": str(args.model), "data": str(args.data), "frame": [local.height, local.width],
        "server": f"dfr-serve (tritonserver, Python backend stub running ONNX Runtime), {args.instances} "
                  f"instance(s) x {args.threads} ONNX Runtime thread(s), max batch 8",
        "queue_delay_us": args.queue_delay_us,
        "parity": parity, "latency_ms_median": latency,
        "overhead_ms": {k: v - latency["local"] for k, v in latency.items() if k != "local"},
        "server_side_ms_per_request": server_ms, "cpu_ms_per_request": cpu_ms,
        "throughput_img_s": {"served_4_clients": served, **local_best}, "served_vs_best_local": served / best,
        "batch_sizes_formed": batches, "rounds": args.rounds, "seconds": args.seconds,
        "load_average_1_5_15_min_at_end": os.getloadavg(),  # the machine is shared: how busy it was
    })


if __name__ == "__main__":
    main()
