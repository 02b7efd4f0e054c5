"""handgeom's command line: ``handgeom demo`` (the main job) and ``handgeom bench``.

Both run from a source checkout: they use the benchmark scripts in ``benchmarks/``, which time
each op against its plain PyTorch formulation in ``python_tests/references.py``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import torch

import handgeom


BENCHMARKS = ("bench_projection", "bench_mesh", "bench_edge_conv")


def _benchmark(name: str):
    """Imports a benchmark script of the source checkout this package was installed from."""
    root = Path(__file__).resolve().parents[1] / "benchmarks"
    if not (root / f"{name}.py").is_file():
        sys.exit(f"handgeom: benchmarks/{name}.py not found under {root.parent}; the demo and benchmarks "
                 "run from a source checkout installed with `make build` (pip install -e).")
    sys.path.insert(0, str(root))
    return importlib.import_module(name)


def _devices(requested: str | None) -> list[str]:
    if requested:
        if requested == "cuda" and not (handgeom.build_info()["cuda"] and torch.cuda.is_available()):
            sys.exit("handgeom: --device cuda needs a GPU and a build with CUDA kernels "
                     f"(build_info: {handgeom.build_info()})")
        return [requested]
    cuda = handgeom.build_info()["cuda"] and torch.cuda.is_available()
    return ["cpu", "cuda"] if cuda else ["cpu"]


def demo(args: argparse.Namespace) -> None:
    info = handgeom.build_info()
    print(f"handgeom {info['version']} on torch {info['torch_runtime']}: CUDA kernels "
          f"{'compiled for sm_' + info['cuda_archs'] if info['cuda'] else 'not built'}, "
          f"GPU {'present' if info['cuda_available'] else 'absent'}, OpenMP {'on' if info['openmp'] else 'off'}, "
          f"{info['threads']} CPU threads\n")
    projection = _benchmark("bench_projection")
    for device in _devices(args.device):
        projection.run(device, quick=True)
        print()


def bench(args: argparse.Namespace) -> None:
    for name in BENCHMARKS:
        module = _benchmark(name)
        for device in _devices(args.device):
            module.run(device, quick=args.quick)
            print()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="handgeom", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    p_demo = commands.add_parser("demo", help="run the projection op on every device and time it "
                                 "against plain PyTorch")
    p_demo.add_argument("--device", choices=["cpu", "cuda"], help="default: CPU, and CUDA when available")
    p_demo.set_defaults(run=demo)
    p_bench = commands.add_parser("bench", help="run the benchmarks in benchmarks/")
    p_bench.add_argument("--device", choices=["cpu", "cuda"], help="default: CPU, and CUDA when available")
    p_bench.add_argument("--quick", action="store_true", help="fewer repetitions")
    p_bench.set_defaults(run=bench)
    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
