"""dfr-serve: serve an exported model through a real Triton Inference Server on this machine (no Docker).

Clients use the same URL as for any Triton server: load_detector("triton://localhost:8001/dfr"),
or dfr-infer triton://localhost:8001/dfr IMAGES --out DIR. Needs `pip install 'dfr-edge[serve]'`.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from dfr_edge.cli.common import run_main
from dfr_edge.runtime.triton.model import DEFAULT_MAX_BATCH, DEFAULT_NAME, SERVE_QUEUE_DELAY_US


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dfr-serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=Path, help="exported .onnx file (any variant) or a bundle folder (its model.onnx)")
    p.add_argument("--name", default=DEFAULT_NAME, help="model name clients ask for")
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--metrics-port", type=int, default=8002, help="Prometheus metrics (/metrics)")
    p.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH, help="largest batch the server forms")
    p.add_argument("--instances", type=int, default=1,
                   help="model instances (one stub process and ONNX Runtime session each; on a CPU: one per "
                        "core with --threads 1)")
    p.add_argument("--queue-delay-us", type=int, default=SERVE_QUEUE_DELAY_US,
                   help="how long a request may wait for others to form a batch (default 0: on CPU a wait "
                        "costs every lone request its length; requests queued behind busy instances still "
                        "batch; dfr-export --triton writes 2000)")
    p.add_argument("--provider", default="cpu", help="cpu, cuda or tensorrt (ONNX Runtime execution provider)")
    p.add_argument("--threads", type=int, help="ONNX Runtime threads per instance (default: all cores)")
    return p


def _stop_on_sigterm(*_) -> None:
    raise KeyboardInterrupt


@run_main
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from dfr_edge.serve import ServeOptions, Server

    options = ServeOptions(name=args.name, http_port=args.http_port, grpc_port=args.grpc_port,
                           metrics_port=args.metrics_port, max_batch=args.max_batch, instances=args.instances,
                           queue_delay_us=args.queue_delay_us, provider=args.provider, threads=args.threads)
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)  # a clean Triton shutdown on `kill`
    try:
        server = Server(args.model, options)
        print(f"serving {server.path} as {server.model.name} ({server.backend_name}, max batch "
              f"{server.model.max_batch_size}, {server.model.instances} instance(s)): "
              f"triton://localhost:{args.grpc_port}/{server.model.name} (gRPC), "
              f"triton+http://localhost:{args.http_port}/{server.model.name}, "
              f"metrics http://localhost:{args.metrics_port}/metrics", flush=True)
        if server.wait():
            print("error: the Triton server stopped unexpectedly (see its log above)", file=sys.stderr)
            return 1
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
