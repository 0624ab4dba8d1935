"""dfr-export: write the fused graph of a bundle to ONNX (FP32, and FP16 / INT8 on request)."""

from __future__ import annotations

import argparse
from pathlib import Path

from dfr_edge.cli.common import ArgumentParser, add_threads_option, check_writable, finite_float, positive_int, run_main
from dfr_edge.export.fidelity import DEFAULT_MAP_SHIFT, DEFAULT_SCORE_SHIFT
from dfr_edge.report import format_table


def parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="dfr-export", description=__doc__)
    p.add_argument("bundle", type=Path, help="bundle directory made by dfr-train; files are written into it")
    p.add_argument("--fp16", action="store_true", help="also write model.fp16.onnx (head and I/O float32)")
    p.add_argument("--int8", action="store_true",
                   help="also write model.int8.onnx (TensorRT Q/DQ) and model.int8-cpu.onnx (ONNX Runtime CPU)")
    p.add_argument("--calib", type=Path, help="normal images for INT8 calibration (default: the bundle's training data)")
    p.add_argument("--calib-method", default="minmax", choices=["minmax", "entropy", "percentile"],
                   help="activation ranges (any image count, bounded memory)")
    p.add_argument("--calib-count", type=positive_int, default=256, help="calibration images (seeded sample)")
    p.add_argument("--calib-seed", type=int, default=0)
    p.add_argument("--float-blocks", default="auto",
                   help="INT8 units kept float: 'auto' (fewest that meet --fidelity-budget), 'none', "
                        "or a list such as blocks.3,cae; the CPU flavour tries 8-bit, then 7-bit weights")
    p.add_argument("--fidelity-budget", type=finite_float, default=DEFAULT_MAP_SHIFT,
                   help="largest INT8 map error on held-out normal images, where they reach the pixel threshold, as "
                        "a share of the distance from the normal pixel median to it (default %(default)s)")
    p.add_argument("--score-budget", type=finite_float, default=DEFAULT_SCORE_SHIFT,
                   help="largest INT8 image-score error on held-out normal images (p90), as a share of the distance "
                        "from the median normal score to the image threshold (default %(default)s)")
    p.add_argument("--allow-drop", action="store_true", help="write INT8 even beyond the fidelity budget")
    p.add_argument("--eval", type=Path, dest="eval_data", help="MVTec-layout folder: accuracy of every variant vs FP32")
    p.add_argument("--max-drop", type=finite_float,
                   help="fail a variant that loses more than this (AUROCs, PRO) vs FP32")
    p.add_argument("--force", action="store_true",
                   help="replace existing exported files (without it, only the missing ones are written)")
    add_threads_option(p)
    engine = p.add_argument_group("TensorRT engine (built on this machine's GPU; the ONNX variant is exported "
                                  "first if missing)")
    engine.add_argument("--engine", action="store_true", help="build BUNDLE/engines/model.<precision>....engine")
    engine.add_argument("--precision", default="fp16", choices=["fp32", "fp16", "int8", "best"],
                        help="which ONNX variant to compile (best: int8 if model.int8.onnx exists, else fp16)")
    engine.add_argument("--max-batch", type=positive_int, default=8, help="largest batch of the optimization profile")
    engine.add_argument("--opt-batch", type=positive_int, help="batch TensorRT tunes for (default: --max-batch)")
    engine.add_argument("--workspace", type=positive_int, default=1024, help="workspace memory pool limit, MiB")
    engine.add_argument("--opt-level", type=int, choices=range(6), help="builder optimization level 0-5")
    engine.add_argument("--dla-core", type=int, help="build for this DLA core (Jetson AGX Orin / Orin NX)")
    engine.add_argument("--version-compatible", action="store_true",
                        help="engine loadable by later TensorRT versions (and the lean runtime)")
    triton = p.add_argument_group("Triton model repository (uses the variant's file if already exported; "
                                  "--max-batch sets max_batch_size; built engines of that file become a plan model)")
    triton.add_argument("--triton", type=Path, metavar="REPO", help="add the model as a new version in REPO")
    triton.add_argument("--name", default="dfr", help="model name in the repository")
    triton.add_argument("--variant", default="fp32", choices=["fp32", "fp16", "int8", "int8-cpu"])
    triton.add_argument("--instances", type=positive_int, default=1, help="model instances per GPU (or on the CPU)")
    triton.add_argument("--kind", default="gpu", choices=["gpu", "cpu"], help="where the instances run")
    triton.add_argument("--trt-accelerator", choices=["fp16", "int8"],
                        help="run through ONNX Runtime's TensorRT execution provider at this precision")
    return p


def build_engine_command(args: argparse.Namespace) -> int:
    from dfr_edge.export.tensorrt import EngineOptions, build_engine

    options = EngineOptions(precision=args.precision, max_batch=args.max_batch, opt_batch=args.opt_batch,
                            workspace_mib=args.workspace, opt_level=args.opt_level, dla_core=args.dla_core,
                            version_compatible=args.version_compatible, force=args.force)
    built = build_engine(args.bundle, options)
    print(f"{'reused' if built.cached else 'built'} {built.path}")
    print(f"equivalent trtexec command:\n  {built.trtexec}")
    return 0


@run_main
def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.bundle.is_dir():  # a read-only bundle is refused now, not after minutes of export
        check_writable(args.bundle, folder=True)
    from dfr_edge.outputs import writing

    with writing(args.bundle, "dfr-export"):  # before torch loads: a refusal is instant
        if args.engine:
            return build_engine_command(args)
        if args.triton is not None and _repository_only(args):
            return _add_to_repository(args)
        from dfr_edge.bundle import load_bundle
        from dfr_edge.export.pipeline import ExportOptions, export_bundle
        from dfr_edge.export.sensitivity import parse_float_request
        from dfr_edge.threads import use_torch_threads

        options = ExportOptions(fp16=args.fp16, int8=args.int8, calib=args.calib, calib_method=args.calib_method,
                                calib_count=args.calib_count, calib_seed=args.calib_seed, eval_data=args.eval_data,
                                max_drop=args.max_drop, force=args.force, threads=use_torch_threads(args.threads),
                                float_blocks=parse_float_request(args.float_blocks),
                                fidelity_budget=args.fidelity_budget, score_budget=args.score_budget,
                                allow_drop=args.allow_drop)
        results = export_bundle(load_bundle(args.bundle), options)
    rows = []
    for r in results:
        m, d = r.metrics or {}, r.deltas or {}
        rows.append([r.variant, str(r.path), f"{r.parity.map_max_abs:.3g}", f"{r.parity.relative:.2g}",
                     *(f"{m[k]:.4f}" + (f" ({d[k]:+.4f})" if k in d else "") if k in m else "-"
                       for k in ("image_auroc", "pixel_auroc", "pro"))])
    print(format_table(["variant", "file", "map err vs torch", "rel. err", "image AUROC", "pixel AUROC", "PRO"], rows))
    if args.triton is not None:
        return _add_to_repository(args)
    return 0


def _repository_only(args: argparse.Namespace) -> bool:
    """--triton with the variant already exported and nothing else asked: no export step."""
    from dfr_edge.export.triton import variant_file

    source = variant_file(args.bundle, args.variant)
    flag = {"fp16": "--fp16", "int8": "--int8", "int8-cpu": "--int8"}.get(args.variant)
    if not source.is_file() and flag and not getattr(args, flag.strip("-")):
        raise FileNotFoundError(f"{source} does not exist: add {flag} to export it")
    return source.is_file() and not (args.fp16 or args.int8 or args.force)


def _add_to_repository(args: argparse.Namespace) -> int:
    from dfr_edge.export.triton import RepositoryOptions, read_served_model, variant_file, write_repository
    from dfr_edge.runtime.triton.model import ServedModel

    source = variant_file(args.bundle, args.variant)
    manifest, _ = read_served_model(source)
    model = ServedModel(args.name, manifest["input"]["height"], manifest["input"]["width"], args.max_batch,
                        instances=args.instances)
    done = write_repository(source, args.triton, RepositoryOptions(model, args.kind, args.trt_accelerator))
    print(f"{source.name} is version {done.version} of {args.name} in {args.triton} ({done.config})"
          + (f"; TensorRT plans in {done.plan_config.parent}" if done.plan_config else ""))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
