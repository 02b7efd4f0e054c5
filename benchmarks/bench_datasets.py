"""Benchmark: synthetic data generation (images/s) and the ground truth's physical statistics.

Rates: samples per second of each synthetic dataset at 128² and 256², (a) in this process with
torch's threads (2 on the reference machine; batches of 16), (b) through a DataLoader with 2 worker processes
(batch 16; how training consumes them), and the time of one epoch of 1,000 samples at 128²
through that DataLoader. Targets: >= 200 images/s at 128², >= 60 at 256². For reference, the
DataLoader's own ceiling: the rate at which it delivers copies of one ready-made sample (the
collation and the hand-over between processes, without generating anything).

Ground truth: for the interacting hands, the intersection volume left between the two hands (1 mm
grid over the boxes' overlap: median, p99, max in mm³) and the fraction of samples whose surfaces
come within 1 cm; for the grasps, the fingertips within 2 mm of the object (minimum over samples)
and the penetration depth (maximum).

    python benchmarks/bench_datasets.py [--quick] [--json FILE]
"""

from __future__ import annotations

import time

import torch
from torch.utils.data import DataLoader, Dataset

from common import cli, format_table
from handgeom.datasets import SyntheticHandObject, SyntheticInteractingHands, SyntheticSingleHand
from handgeom.datasets.sample import hand_model
from handgeom.metrics import intersection_volume, penetration_depth
from handgeom.ops import signed_distance

DATASETS = {"interacting": SyntheticInteractingHands, "hand-object": SyntheticHandObject, "single": SyntheticSingleHand}
TARGETS = {128: 200.0, 256: 60.0}


def rate_in_process(cls, size: int, n: int) -> float:
    """Samples/s made in this process, in batches of 16 as a DataLoader fetches them."""
    dataset = cls(n + 16, size, seed=1)
    dataset.__getitems__(list(range(n, n + 16)))  # warm-up
    start = time.perf_counter()
    for i in range(0, n, 16):
        dataset.__getitems__(list(range(i, min(i + 16, n))))
    return n / (time.perf_counter() - start)


def rate_loader(dataset: Dataset) -> tuple[float, float]:
    """Through a DataLoader with 2 workers and batch 16: (samples/s in steady state, seconds of the
    whole epoch including worker start-up)."""
    n = len(dataset)
    loader = DataLoader(dataset, batch_size=16, num_workers=2)
    start = time.perf_counter()
    first = None
    for i, _ in enumerate(loader):
        if i == 0:
            first = time.perf_counter()
    end = time.perf_counter()
    return (n - 16) / max(end - first, 1e-9), end - start


class _Copies(Dataset):
    """``size`` copies of one sample: what the DataLoader costs by itself."""

    def __init__(self, sample: dict, size: int):
        self.sample, self.size = sample, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict:
        return {k: v.clone() for k, v in self.sample.items()}


def interaction_stats(n: int) -> dict:
    right, left = hand_model("right").faces, hand_model("left").faces
    dataset = SyntheticInteractingHands(n, 32, seed=3)
    volumes, near = [], []
    for i in range(n):
        s = dataset[i]
        verts = s["verts"].double()
        volumes.append(float(intersection_volume(verts[:1], right, verts[1:], left, pitch=0.001)) * 1e9)
        d, _, _ = signed_distance(verts[1:], verts[:1], right)
        near.append(float(d.abs().min()) <= 0.01)
    v = torch.tensor(volumes, dtype=torch.float64)
    return {"samples": n, "volume_median_mm3": float(v.median()), "volume_p99_mm3": float(v.quantile(0.99)),
            "volume_max_mm3": float(v.max()), "within_1cm": sum(near) / n}


def grasp_stats(n: int) -> dict:
    dataset = SyntheticHandObject(n, 32, seed=3)
    tips, depth = [], []
    for i in range(n):
        s = dataset[i]
        d, _, _ = signed_distance(s["joints_3d"][:1, [4, 8, 12, 16, 20]], s["object_verts"][None], s["object_faces"])
        tips.append(int((d.abs() <= 0.002).sum()))
        depth.append(float(penetration_depth(s["verts"][:1], s["object_verts"][None], s["object_faces"])) * 1e3)
    return {"samples": n, "min_tips_within_2mm": min(tips), "mean_tips_within_2mm": sum(tips) / n,
            "max_penetration_mm": max(depth)}


def run(device: str = "cpu", quick: bool = False) -> list[dict]:
    if device != "cpu":
        print("bench_datasets: data generation runs on the CPU; skipped for", device)
        return []
    n = 16 if quick else 200
    records = []
    for name, cls in DATASETS.items():
        for size in (128,) if quick else TARGETS:
            loader, epoch = rate_loader(cls(64 if quick else 1000 if size == 128 else 400, size, seed=2))
            ceiling, _ = rate_loader(_Copies(cls(1, size, seed=2)[0], 160 if quick else 800))
            records.append({"dataset": name, "size": size, "in_process": rate_in_process(cls, size, 16 if quick else 64),
                            "loader_2_workers": loader, "epoch_s": epoch if size == 128 and not quick else None,
                            "loader_ceiling": ceiling, "target": TARGETS[size]})
    rows = [[r["dataset"], f"{r['size']}²", f"{r['in_process']:.0f}", f"{r['loader_2_workers']:.0f}",
             "-" if r["epoch_s"] is None else f"{r['epoch_s']:.1f}", f"{r['loader_ceiling']:.0f}", f"{r['target']:.0f}"]
            for r in records]
    print(f"synthetic data, images/s ({torch.get_num_threads()} threads in process; DataLoader: 2 workers, batch 16)")
    print(format_table(["dataset", "size", "in process", "DataLoader", "epoch of 1000 (s)",
                        "DataLoader ceiling (copies)", "target"], rows))
    stats = {"interacting": interaction_stats(n), "hand-object": grasp_stats(n // 2)}
    print("ground truth:", stats)
    records.append({"dataset": "ground truth", **{f"{k}/{m}": v for k, d in stats.items() for m, v in d.items()}})
    return records


def summary(records: list[dict]) -> list[dict]:
    """The rows of `handgeom bench`'s one table: the DataLoader rate against the target."""
    return [{"op": f"dataset {r['dataset']}", "workload": f"{r['size']}² images, DataLoader 2 workers",
             "handgeom": f"{r['loader_2_workers']:.0f} images/s", "baseline": f"target {r['target']:.0f}/s",
             "speedup": r["loader_2_workers"] / r["target"]} for r in records if "size" in r]


if __name__ == "__main__":
    cli(run, __doc__)
