"""handgeom's command line: ``handgeom demo`` (the main job: from an image to two
intersection-free hands), ``handgeom reconstruct IMAGE...`` (two hands from each of your crops),
``handgeom train SYSTEM`` and ``handgeom eval SYSTEM CKPT`` (the networks of the
model layer, e.g. ``dir``), and ``handgeom bench`` (every op's benchmark from the source
checkout's ``benchmarks/``, against its plain PyTorch formulation and the installed peer
libraries).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch

import handgeom
from handgeom.demo import DEMO_SAMPLE, DEMO_SEED, DEMO_STEPS, InputError, print_report, run
from handgeom.hand import TWO_HAND_PRESETS
from handgeom.reconstruct import ImageError, reconstruct_images


BENCHMARKS = ("bench_projection", "bench_edge_conv", "bench_siapose", "bench_occupancy", "bench_mesh", "bench_datasets")


def _benchmark(name: str):
    """Imports a benchmark script of the source checkout this package was installed from."""
    root = Path(__file__).resolve().parents[1] / "benchmarks"
    if not (root / f"{name}.py").is_file():
        sys.exit(f"handgeom: benchmarks/{name}.py not found under {root.parent}; benchmarks run from a source "
                 "checkout installed with `make build` (pip install -e).")
    sys.path.insert(0, str(root))
    return importlib.import_module(name)


def _default_device() -> str:
    """CUDA when a GPU is visible and CUDA kernels were compiled, else CPU."""
    return "cuda" if handgeom.build_info()["cuda"] and torch.cuda.is_available() else "cpu"


def _check_device(device: str) -> None:
    if device == "cuda" and _default_device() != "cuda":
        _fail(f"--device cuda needs a GPU and a build with CUDA kernels (build_info: {handgeom.build_info()})")


def _network(weights: Path | None, device: str):
    """The reconstruction network of ``--weights`` (None: the shipped one, loaded where it is used)."""
    if weights is None:
        return None
    from handgeom.models import InteractingHandsNet

    try:
        return InteractingHandsNet.pretrained(device, weights)
    except (OSError, ValueError, RuntimeError, KeyError) as error:  # RuntimeError: weights of another architecture
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        _fail(f"--weights {weights}: {detail}")


def _make_out(out: Path) -> None:
    """``--out``, made (with its parents) or a one-line error."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        _fail(f"--out {out}: cannot make a directory there ({error.strerror or error})")


def _fail(message: str) -> None:
    print(f"handgeom: error: {message}", file=sys.stderr)
    sys.exit(2)


def demo(args: argparse.Namespace) -> None:
    device = args.device or _default_device()
    _check_device(device)
    if args.steps < 0:
        _fail(f"--steps must be >= 0, got {args.steps}")
    if args.sample < 0:
        _fail(f"--sample must be >= 0, got {args.sample}")
    _make_out(args.out)
    info = handgeom.build_info()
    print(f"handgeom {info['version']} on torch {info['torch_runtime']}, running on {device} "
          f"({info['threads']} CPU threads; CUDA kernels {'compiled for sm_' + info['cuda_archs'] if info['cuda'] else 'not built'}, "
          f"GPU {'present' if info['cuda_available'] else 'absent'})")
    try:
        report = run(args.image, args.sample, args.pose, args.input, args.steps, device, args.out,
                     net=_network(args.weights, device))
    except InputError as error:
        _fail(f"--input {error}")
    except ImageError as error:
        _fail(f"--image {error}")
    print_report(report)


def reconstruct_command(args: argparse.Namespace) -> None:
    device = args.device or _default_device()
    _check_device(device)
    if args.batch < 1:
        _fail(f"--batch must be >= 1, got {args.batch}")
    _make_out(args.out)
    report = reconstruct_images(args.images, args.out, args.batch, device, net=_network(args.weights, device))
    for path, message in report["failed"].items():
        print(f"handgeom: skipped {message}", file=sys.stderr)
    print(f"reconstructed {len(report['reconstructed'])} of {report['images']} images in {report['seconds']:.1f} s "
          f"on {device}; wrote meshes, joints, metrics and overlays to {args.out}/ (summary: {args.out / 'report.json'})")
    if report["failed"]:
        sys.exit(1)


def _loss_weights(text: str | None) -> dict[str, float]:
    """``--loss occupancy=1e-3,penetration=10`` as a dict."""
    weights = {}
    for item in filter(None, (text or "").split(",")):
        key, _, value = item.partition("=")
        try:
            weights[key.strip()] = float(value)
        except ValueError:
            _fail(f"--loss expects name=weight pairs separated by commas, got {item!r}")
    return weights


def train_command(args: argparse.Namespace) -> None:
    from handgeom.train import TrainError, system, train

    device = args.device or _default_device()
    _check_device(device)
    try:
        path = train(system(args.system), args.preset, args.data, args.out, args.steps, args.batch, args.resume,
                     device, _loss_weights(args.loss), lr=args.lr, init=args.init, seed=args.seed)
    except TrainError as error:
        _fail(str(error))
    print(f"wrote {path}, {args.out / 'log.jsonl'} and {args.out / 'eval.md'}")


def eval_command(args: argparse.Namespace) -> None:
    from handgeom.train import TrainError, evaluate_checkpoint, system

    device = args.device or _default_device()
    _check_device(device)
    try:
        sys_ = system(args.system)
        metrics = evaluate_checkpoint(sys_, args.checkpoint, args.data, args.out, args.size, args.seed, device)
    except TrainError as error:
        _fail(str(error))
    print(sys_.markdown(metrics))
    print(f"wrote {args.out / 'eval.json'} and {args.out / 'eval.md'}")


def export_command(args: argparse.Namespace) -> None:
    from handgeom.train import TrainError, export_weights

    try:
        held_out = json.loads(args.eval.read_text()) if args.eval else None
        record = export_weights(args.checkpoint, args.to, held_out=held_out, system=args.system)
    except (TrainError, OSError, json.JSONDecodeError) as error:
        _fail(str(error))
    print(f"wrote {args.to}: {record['system']} {record['preset']}, {record['steps']} steps")


def bench(args: argparse.Namespace) -> None:
    devices = [args.device] if args.device else ["cpu"] + (["cuda"] if _default_device() == "cuda" else [])
    for device in devices:
        _check_device(device)
    started = time.perf_counter()
    results, rows = {}, []
    for name in BENCHMARKS:
        module = _benchmark(name)
        for device in devices:
            records = module.run(device, quick=args.quick)
            print()
            results[f"{name}/{device}"] = records
            rows += [{"device": device, **row} for row in module.summary(records)]
    meta = {**handgeom.build_info(), "date": datetime.date.today().isoformat(),
            "command": "handgeom bench" + (" --quick" if args.quick else ""), "cpu": _cpu_model(),
            "seconds": round(time.perf_counter() - started, 1)}
    format_table = _benchmark("common").format_table
    headers = ["op", "workload", "device", "handgeom", "baseline", "speedup"]
    table = [[r["op"], r["workload"], r["device"], r["handgeom"], r["baseline"],
              "-" if r["speedup"] is None else f"{r['speedup']:.1f}x"] for r in rows]
    print(f"Summary ({meta['command']}, {meta['date']}, threads: {meta['threads']}, {meta['cpu']}):")
    print(format_table(headers, table))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps(_finite({"meta": meta, "summary": rows, "records": results}), indent=2, allow_nan=False))
    markdown = [f"`{meta['command']}` on {meta['date']}: {meta['cpu']}, {meta['threads']} threads, torch "
                f"{meta['torch_runtime']}.", "", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    markdown += ["| " + " | ".join(row) + " |" for row in table]
    (args.out / "bench.md").write_text("\n".join(markdown) + "\n")
    print(f"wrote {args.out / 'bench.json'} and {args.out / 'bench.md'} ({meta['seconds']} s)")


def _finite(value):
    """``value`` with NaN and infinities as None: strict JSON."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="handgeom", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    p_demo = commands.add_parser("demo", help="from an image to two intersection-free hands (the main job)")
    source = p_demo.add_mutually_exclusive_group()
    source.add_argument("--sample", type=int, default=DEMO_SAMPLE,
                        help=f"index of the held-out synthetic image (SyntheticInteractingHands seed {DEMO_SEED}; "
                        f"default: {DEMO_SAMPLE})")
    source.add_argument("--image", type=Path, help="your own crop of two hands (PNG, JPEG, ...), instead of the sample")
    source.add_argument("--pose", choices=sorted(TWO_HAND_PRESETS), help="a preset pair of hands, without an image")
    source.add_argument("--input", type=Path, help="JSON or NPZ with right_joints and left_joints (21 x 3, metres, "
                        "OpenPose joint order), e.g. another method's predictions; fitted by IK, without an image")
    p_demo.add_argument("--steps", type=int, default=DEMO_STEPS, help=f"optimization steps (default: {DEMO_STEPS})")
    p_demo.add_argument("--device", choices=["cpu", "cuda"], help="default: CUDA when available, else CPU")
    p_demo.add_argument("--out", type=Path, default=Path("demo_out"), help="output directory (default: demo_out)")
    p_demo.add_argument("--weights", type=Path, help="the network's weights (handgeom export dir); default: the shipped ones")
    p_demo.set_defaults(run=demo)
    p_rec = commands.add_parser("reconstruct", help="two hands from each of your images, with the shipped DIR network")
    p_rec.add_argument("images", type=Path, nargs="+", help="crops of two interacting hands (PNG, JPEG, ...)")
    p_rec.add_argument("--out", type=Path, default=Path("reconstruct_out"), help="output directory (default: reconstruct_out)")
    p_rec.add_argument("--batch", type=int, default=8, help="images per network pass (default: 8)")
    p_rec.add_argument("--device", choices=["cpu", "cuda"], help="default: CUDA when available, else CPU")
    p_rec.add_argument("--weights", type=Path, help="the network's weights (handgeom export dir); default: the shipped ones")
    p_rec.set_defaults(run=reconstruct_command)
    from handgeom.train import SYSTEMS

    p_train = commands.add_parser("train", help="train a network of the model layer (e.g. dir)")
    p_train.add_argument("system", choices=SYSTEMS)
    p_train.add_argument("--preset", default="cpu", help="cpu (trains on 2 CPU cores), paper (a GPU), tiny (smoke test)")
    p_train.add_argument("--data", default="synthetic", help="synthetic (default) or interhand:PATH")
    p_train.add_argument("--steps", type=int, help="default: the preset's")
    p_train.add_argument("--batch", type=int, help="global batch over all processes; default: the preset's")
    p_train.add_argument("--out", type=Path, default=Path("runs/train"), help="checkpoint, log and evaluation (default: runs/train)")
    p_train.add_argument("--resume", action="store_true", help="continue OUT/last.pt")
    p_train.add_argument("--init", type=Path, help="fine-tune: start from a checkpoint's or shipped weights")
    p_train.add_argument("--lr", type=float, help="peak learning rate; default: the preset's")
    p_train.add_argument("--seed", type=int, help="seed of the training data and the run (default 0); a fine-tune "
                         "with another seed sees new scenes; `eval` holds out seed 1")
    p_train.add_argument("--loss", help="loss weights, e.g. occupancy=1e-3,penetration=10")
    p_train.add_argument("--device", choices=["cpu", "cuda"], help="default: CUDA when available, else CPU")
    p_train.set_defaults(run=train_command)
    p_eval = commands.add_parser("eval", help="evaluate a checkpoint on held-out data")
    p_eval.add_argument("system", choices=SYSTEMS)
    p_eval.add_argument("checkpoint", type=Path)
    p_eval.add_argument("--data", default="synthetic", help="synthetic (default) or interhand:PATH")
    p_eval.add_argument("--size", type=int, default=500, help="held-out samples (default: 500)")
    p_eval.add_argument("--seed", type=int, default=1, help="held-out seed (default: 1; training uses 0)")
    p_eval.add_argument("--out", type=Path, default=Path("runs/eval"), help="eval.json and eval.md (default: runs/eval)")
    p_eval.add_argument("--device", choices=["cpu", "cuda"], help="default: CUDA when available, else CPU")
    p_eval.set_defaults(run=eval_command)
    p_export = commands.add_parser("export", help="a checkpoint's model as shipped weights, with its training record")
    p_export.add_argument("system", choices=SYSTEMS)
    p_export.add_argument("checkpoint", type=Path)
    p_export.add_argument("--to", type=Path, required=True, help="the weights file, e.g. handgeom/weights/dir_cpu.pt")
    p_export.add_argument("--eval", type=Path, help="eval.json of `handgeom eval`, stored in the record as held_out")
    p_export.set_defaults(run=export_command)
    p_bench = commands.add_parser("bench", help="run every op's benchmark in benchmarks/, one summary table")
    p_bench.add_argument("--device", choices=["cpu", "cuda"], help="default: CPU, and CUDA when available")
    p_bench.add_argument("--quick", action="store_true", help="a reduced set (under two minutes on 2 cores)")
    p_bench.add_argument("--out", type=Path, default=Path("bench_out"), help="where bench.json and bench.md go")
    p_bench.set_defaults(run=bench)
    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
