"""Table I of "Two Hands Are Better Than One" (Ivashechkin, Mendez and Bowden, IROS 2023) on
handgeom's data: 3D hand estimators trained without and with the occupancy intersection loss,
and the hand-hand intersections that disappear.

``python -m handgeom.experiments.two_hands [--quick] [--out runs/two_hands] [--export]``

1. Pairs: :class:`~handgeom.datasets.SyntheticInteractingHands` scenes without images (their
   ground truth is intersection-free), train / val / test from different seeds
   (:func:`handgeom.train.uplift.save_pairs`); inputs made by :func:`handgeom.train.uplift.corrupt`.
2. For the uplift (2D keypoints -> two hands) and the refiner (noisy colliding 3D skeletons ->
   refined hands): a baseline trained on MPJPE (plus offset and bone lengths) by the training loop
   (:mod:`handgeom.train.loop`, system :mod:`handgeom.train.uplift`), then clones fine-tuned from
   it for the same number of steps: the control (no new term: the table's baseline row, so that
   extra training is not credited to the loss), the intersection loss over the paper's options
   one coordinate at a time (a sweep of weights with dense points, the flipped pair α = 1,
   squared; then, at the chosen weight, one option changed at a time: sparse or mesh points, the
   single hand α = 0, truncated; then the chosen option at the other weights;
   ``Sizes(options=None)`` runs all twelve combinations) and handgeom's exact alternative,
   ``penetration`` between the two predicted meshes (a sweep of weights). The refiner is
   fine-tuned with the uplift's chosen settings only (a sweep of its own doubles the run time).
3. Selection on the validation split, by MPJPE as the paper does, among the settings that remove
   at least ``TARGET`` of the control's validation intersections (ray-cast on a 20³ grid); when
   none does, the setting with the fewest.
4. On the test pairs, each chosen model's MPJPE (mm, root-relative), MRRPE, the ray-cast count
   (grid points inside both predicted meshes, placed by the predicted offset, on the paper's
   125k-point grid, :func:`handgeom.metrics.count_intersections`) and the occupancy-network count
   (:func:`handgeom.metrics.count_intersections_occupancy`, on an ``occupancy_resolution``³ grid),
   with their decrease against the baseline.

Outputs in ``--out``: ``table.md`` (laid out like Table I, and the validation sweep),
``results.json``, ``fig5_occupancy_vs_raycast.png`` (the paper's Fig. 5: per-point intersection
probability from the occupancy network against the ray-cast rate) and ``fig6_before_after.png``
(skeletons and meshes of test pairs, baseline and fine-tuned, with their intersection points); the
figures need matplotlib. ``--export`` writes the uplift's baseline and chosen fine-tuned weights
to ``handgeom/weights`` (:meth:`handgeom.models.TwoHandUplift.pretrained`).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from handgeom.losses import default_occupancy_net, mirror, placed_meshes
from handgeom.metrics import count_intersections, intersection_grid
from handgeom.models.occupancy import HAND_CULL_MARGIN
from handgeom.models.uplift import PRETRAINED
from handgeom.ops.mesh import points_inside_mesh
from handgeom.train import uplift as system
from handgeom.train.loop import export_weights, load_checkpoint, train

__all__ = ["Sizes", "DEFAULT", "QUICK", "run", "count_pairs", "main"]

TARGET = 0.2  # the fraction of intersections a selected setting must remove on validation
RESOLUTION = 50  # the paper's 125k-point grid
PER_POINTS = {"sparse": 21, "dense": 121, "mesh": 330}  # tested points per hand: weights are per 121 points


@dataclass(frozen=True)
class Sizes:
    """What the experiment trains and evaluates (defaults: under 30 minutes on 2 CPU cores)."""

    train_scenes: int = 1500
    views: int = 8  # cameras per training scene (a view costs a small fraction of a scene)
    val_scenes: int = 300
    test_scenes: int = 2000
    base_steps: int = 2000
    finetune_steps: int = 80
    finetune_lr: float = 2e-4
    weights: tuple[float, ...] = (1e-3, 2e-3, 3e-3, 1e-2)  # intersection-loss weights, per 121 tested points
    penetration_weights: tuple[float, ...] = (300.0, 3000.0)
    # (points, alpha, truncate) swept at the chosen weight, one option at a time from (dense, 1, 0);
    # None: all twelve combinations. The refiner is fine-tuned with the uplift's chosen settings.
    options: tuple[tuple[str, float, float], ...] | None = (("sparse", 1.0, 0.0), ("mesh", 1.0, 0.0),
                                                            ("dense", 0.0, 0.0), ("dense", 1.0, 1.0))
    occupancy_resolution: int = 25
    presets: tuple[str, str] = ("cpu", "cpu-refiner")
    batch: int | None = None  # None: the preset's
    figure_pairs: int = 100  # test pairs of Fig. 5


DEFAULT = Sizes()
QUICK = Sizes(train_scenes=24, views=2, val_scenes=8, test_scenes=8, base_steps=6, finetune_steps=2,
              weights=(1e-2,), penetration_weights=(300.0,), options=(("mesh", 0.0, 1.0),), occupancy_resolution=10, presets=("tiny", "tiny-refiner"),
              batch=8, figure_pairs=4)


def count_pairs(out: dict[str, torch.Tensor], faces: tuple[torch.Tensor, torch.Tensor], resolution: int = RESOLUTION,
                batch: int = 64) -> torch.Tensor:
    """``[B]`` int64: the ray-cast count of each predicted pair (``out`` as the models return it):
    grid points inside both meshes, placed by the predicted offset, on a ``resolution``³ grid
    over the pair (:func:`handgeom.metrics.count_intersections`), in chunks of ``batch`` pairs."""
    right, left = placed_meshes(out)
    return torch.cat([count_intersections(right[i:i + batch].double(), faces[0], left[i:i + batch].double(), faces[1],
                                          resolution) for i in range(0, len(right), batch)])


class _Runner:
    def __init__(self, out: Path, sizes: Sizes, progress: bool):
        self.out, self.sizes, self.progress = out, sizes, progress
        self.data = f"pairs:{out / 'pairs.pt'}"
        self.log: list[str] = []

    def fit(self, preset: str, name: str, steps: int, loss: dict[str, float] | None = None,
            init: Path | None = None) -> dict:
        """A run of the training loop (kept when the same run finished before), and its validation
        metrics."""
        directory = self.out / "runs" / name
        path = directory / "last.pt"
        lr = self.sizes.finetune_lr if init is not None else None
        state = torch.load(path, map_location="cpu", weights_only=False) if path.is_file() else {}
        asked = (preset, steps, lr or system.PRESETS[preset].lr, str(init) if init is not None else None)
        if state.get("final") is None or (state["preset"], state["config"]["steps"], state["config"]["lr"],
                                          state["config"]["init"]) != asked:
            train(system, preset, self.data, directory, steps=steps, batch=self.sizes.batch, loss_weights=loss,
                  lr=lr, init=init, progress=self.progress)
            state = torch.load(path, map_location="cpu", weights_only=False)
        return {"name": name, "checkpoint": str(path), "loss": state["config"]["loss"], "val": state["final"]["eval"],
                "train_seconds": state["final"]["train_seconds"]}

    def study(self, kind: str, preset: str, first: tuple[str, float, float], weights: tuple[float, ...],
              options: tuple[tuple[str, float, float], ...], penetration_weights: tuple[float, ...]) -> dict:
        """The baseline, control, intersection-loss sweep and penetration sweep of one estimator,
        one coordinate at a time: the ``first`` (points, alpha, truncate) setting at each of
        ``weights``, each of ``options`` at the chosen weight, then the chosen option (when not
        ``first``) at the other weights."""
        s = self.sizes
        base = self.fit(preset, f"{kind}/base", s.base_steps)
        init = Path(base["checkpoint"])
        tune = lambda name, loss: self.fit(preset, f"{kind}/{name}", s.finetune_steps, loss, init)
        control = tune("control", {})
        threshold = (1 - TARGET) * control["val"]["intersections"]

        def select(runs: list[dict]) -> dict:
            good = [r for r in runs if r["val"]["intersections"] <= threshold]
            return min(good, key=lambda r: r["val"]["mpjpe"]) if good else min(runs, key=lambda r: r["val"]["intersections"])

        def setting(points: str, alpha: float, truncate: float, weight: float) -> dict:
            loss = {f"intersection_{points}": weight * 121 / PER_POINTS[points], "alpha": alpha, "truncate": truncate}
            run = tune(f"{points}_a{alpha:g}_t{truncate:g}_w{weight:g}", loss)
            run.update(points=points, alpha=alpha, truncate=truncate, weight=weight)
            return run

        sweep = [setting(*first, w) for w in weights]
        best_weight = select(sweep)["weight"]
        sweep += [setting(p, a, t, best_weight) for p, a, t in options if (p, a, t) != tuple(first)]
        best = select(sweep)
        if (option := (best["points"], best["alpha"], best["truncate"])) != tuple(first):
            sweep += [setting(*option, w) for w in weights if w != best_weight]
        penetration = [tune(f"penetration_w{w:g}", {"penetration": w}) | {"weight": w} for w in penetration_weights]
        return {"base": base, "control": control, "sweep": sweep, "chosen": select(sweep),
                "penetration": select(penetration), "penetration_sweep": penetration}


def _test_rows(runner: _Runner, studies: dict, progress: bool) -> tuple[list[dict], dict]:
    """The test metrics of each chosen model, per pair; and the outputs, for the figures."""
    s = runner.sizes
    rows, outputs = [], {}
    for kind, study in studies.items():
        preset = s.presets[0 if kind == "uplift" else 1]
        config_seed = system.PRESETS[preset].seed
        test = system.dataset(runner.data, "test", system.PRESETS[preset], s.test_scenes, seed=config_seed + 2)
        for label, run in (("baseline", study["control"]), ("+ intersection loss", study["chosen"]),
                           ("+ penetration loss (exact)", study["penetration"])):
            model, _, _ = load_checkpoint(system, Path(run["checkpoint"]))
            per_pair: dict[str, list[torch.Tensor]] = {}
            kept = {"joints": [], "verts": [], "offset": []}
            loader = DataLoader(test, batch_size=64)
            with torch.no_grad():
                for batch in tqdm(loader, desc=f"test {kind} {label}", disable=not progress, leave=False):
                    metrics, out = system.pair_metrics(model, batch, RESOLUTION, s.occupancy_resolution)
                    for k, v in metrics.items():
                        per_pair.setdefault(k, []).append(v)
                    for k in kept:
                        kept[k].append(out[k])
            values = {k: torch.cat(v).double() for k, v in per_pair.items()}
            rows.append({"model": kind, "row": label, "run": run["name"], "loss": run["loss"],
                         **{k: float(v.mean()) for k, v in values.items()},
                         "per_pair": {k: v.tolist() for k, v in values.items()}})
            outputs[(kind, label)] = {k: torch.cat(v) for k, v in kept.items()}
    for row in rows:  # the decrease against the baseline of the same estimator
        base = next(r for r in rows if r["model"] == row["model"] and r["row"] == "baseline")
        for k in ("intersections", "occupancy"):
            row[f"{k}_decrease"] = 1 - row[k] / base[k] if base[k] > 0 else math.nan
        row["mpjpe_change"] = row["mpjpe"] / base["mpjpe"] - 1
    return rows, outputs


def _table(rows: list[dict], studies: dict, sizes: Sizes, test_pairs: int) -> str:
    names = {"uplift": "TwoHandUplift (2D keypoints)", "refiner": "SkeletonRefiner (noisy 3D skeletons)"}
    lines = [f"Test: {test_pairs} pairs. MPJPE and MRRPE in mm (root-relative); intersections: grid points inside both "
             f"predicted meshes on a {RESOLUTION}³ (125k) grid per pair, ray cast, and by the occupancy network on a "
             f"{sizes.occupancy_resolution}³ grid; means per pair, decrease against the baseline.", "",
             "| method | MPJPE | MRRPE | ray-cast intersections | decrease | occupancy intersections | decrease |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        label = names[row["model"]] if row["row"] == "baseline" else row["row"]
        dec = lambda k: "" if row["row"] == "baseline" else f"{100 * row[k + '_decrease']:.1f}%"
        lines.append(f"| {label} | {row['mpjpe']:.2f} | {row['mrrpe']:.2f} | {row['intersections']:.1f} | "
                     f"{dec('intersections')} | {row['occupancy']:.2f} | {dec('occupancy')} |")
    lines += ["", "Validation sweep (fine-tuned from the baseline; intersections ray-cast on a 20³ grid; weights per "
              "121 tested points; chosen: *):", "",
              "| model | points | α | truncated | weight | val MPJPE | val intersections |", "|---|---|---|---|---|---|---|"]
    for kind, study in studies.items():
        c = study["control"]["val"]
        lines.append(f"| {kind} | control (no new term) | | | | {c['mpjpe']:.2f} | {c['intersections']:.2f} |")
        for r in study["sweep"]:
            mark = " *" if r is study["chosen"] else ""
            lines.append(f"| {kind} | {r['points']}{mark} | {r['alpha']:g} | {'yes' if r['truncate'] else 'no'} | "
                         f"{r['weight']:g} | {r['val']['mpjpe']:.2f} | {r['val']['intersections']:.2f} |")
        for r in study["penetration_sweep"]:
            mark = " *" if r is study["penetration"] else ""
            lines.append(f"| {kind} | exact penetration{mark} | | | {r['weight']:g} | {r['val']['mpjpe']:.2f} | "
                         f"{r['val']['intersections']:.2f} |")
    return "\n".join(lines) + "\n"


def _point_probabilities(out: dict[str, torch.Tensor], faces, n: int) -> tuple[np.ndarray, np.ndarray]:
    """For the first ``n`` pairs, each point of the 125k grid that lies in both meshes' boxes: the
    occupancy network's probability of being inside both hands (the product of the two hands'),
    and whether ray casting finds it inside both meshes."""
    net = default_occupancy_net("cpu")
    right, left = (v[:n].double() for v in placed_meshes(out))
    joints_right, joints_left = out["joints"][:n, 0], out["joints"][:n, 1] - out["offset"][:n, None]
    lo, hi = torch.maximum(right.amin(1), left.amin(1)), torch.minimum(right.amax(1), left.amax(1))  # the boxes' overlap
    probs, inside = [], []
    for b in range(len(right)):
        if not bool((hi[b] > lo[b]).all()):
            continue
        points = intersection_grid(right[b:b + 1], left[b:b + 1], RESOLUTION)[0]
        points = points[((points >= lo[b]) & (points <= hi[b])).all(-1)][None]
        both = points_inside_mesh(points, right[b:b + 1], faces[0]) & points_inside_mesh(points, left[b:b + 1], faces[1])
        p = points.float()
        with torch.no_grad():
            p_right = torch.sigmoid(net(p, joints_right[b:b + 1], cull_margin=HAND_CULL_MARGIN))
            p_left = torch.sigmoid(net(mirror(p), mirror(joints_left[b:b + 1]), cull_margin=HAND_CULL_MARGIN))
        probs.append((p_right * p_left)[0].numpy())
        inside.append(both[0].numpy())
    return (np.concatenate(probs), np.concatenate(inside)) if probs else (np.zeros(0), np.zeros(0, bool))


def _figures(out_dir: Path, rows: list[dict], outputs: dict, faces, sizes: Sizes, test: dict) -> list[str]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no figures (pip install matplotlib)")
        return []
    from handgeom.demo import BLUE, RED, SKIN
    from handgeom.hand.skeleton import BONES
    from handgeom.viz import render_meshes

    written = []
    # Fig. 5: calibration of the occupancy network's intersection probability against ray casting
    prob, inside = _point_probabilities(outputs[("uplift", "baseline")], faces, sizes.figure_pairs)
    edges = np.linspace(0, 1, 11)
    which = np.clip(np.digitize(prob, edges) - 1, 0, 9)
    counts = np.bincount(which, minlength=10)
    rate = np.bincount(which, weights=inside.astype(float), minlength=10) / np.maximum(counts, 1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=120)
    centres = (edges[:-1] + edges[1:]) / 2
    axes[0].bar(centres, rate, width=0.09, color="#c44e52", alpha=0.8, label="ray-cast rate")
    axes[0].plot([0, 1], [0, 1], "k--", lw=1, label="calibrated")
    for c, r, k in zip(centres, rate, counts):
        axes[0].text(c, r + 0.02, f"{k}", ha="center", fontsize=7)
    axes[0].set_xlabel("occupancy-network probability of a point inside both hands")
    axes[0].set_ylabel("fraction inside both meshes (ray casting)")
    axes[0].set_title(f"grid points of {sizes.figure_pairs} test pairs (counts above the bars)", fontsize=9)
    axes[0].legend(fontsize=8)
    ray = np.concatenate([r["per_pair"]["intersections"] for r in rows])
    occ = np.concatenate([r["per_pair"]["occupancy"] for r in rows])
    corr = float(np.corrcoef(ray, occ)[0, 1]) if ray.std() > 0 and occ.std() > 0 else math.nan
    axes[1].scatter(ray, occ, s=3, alpha=0.3)
    axes[1].set_xlabel(f"ray-cast count ({RESOLUTION}³ grid)")
    axes[1].set_ylabel(f"occupancy count ({sizes.occupancy_resolution}³ grid)")
    axes[1].set_title(f"per test pair, every model: r = {corr:.3f}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out_dir / "fig5_occupancy_vs_raycast.png")
    plt.close(fig)
    written.append("fig5_occupancy_vs_raycast.png")
    # Fig. 6: the uplift's baseline and fine-tuned predictions on the test pairs the baseline intersects most
    base_row = next(r for r in rows if r["model"] == "uplift" and r["row"] == "baseline")
    order = np.argsort(-np.asarray(base_row["per_pair"]["intersections"]))[:3]
    fig, axes = plt.subplots(len(order), 4, figsize=(12, 3 * len(order)), dpi=110, squeeze=False)
    view = np.eye(3) * np.array([1, -1, -1])  # camera frame (y down, z forward) to the renderer's (y up, towards -z)
    for row_axes, i in zip(axes, order):
        for col, label in enumerate(("baseline", "+ intersection loss")):
            o = outputs[("uplift", label)]
            one = {k: v[i:i + 1] for k, v in o.items()}
            right, left = (v[0].double() for v in placed_meshes(one))
            joints = [one["joints"][0, 0], one["joints"][0, 1] - one["offset"][0]]
            count = int(count_pairs(one, faces)[0])
            ax = row_axes[2 * col]
            for j, colour in zip(joints, ("#d08c60", "#4c72b0")):
                for a, b in BONES:
                    ax.plot([j[a, 0], j[b, 0]], [-j[a, 1], -j[b, 1]], color=colour, lw=1.5)
            points = _intersection_points(right, left, faces)
            ax.scatter(points[:, 0], -points[:, 1], s=2, color="red")
            ax.set_aspect("equal")
            ax.axis("off")
            ax.set_title(f"test pair {i}, {label}: {count} points", fontsize=8)
            image = render_meshes([(right, faces[0], SKIN), (left, faces[1], BLUE)], (300, 300), view=view, highlight=RED)
            row_axes[2 * col + 1].imshow(image)
            row_axes[2 * col + 1].axis("off")
    fig.tight_layout()
    fig.savefig(out_dir / "fig6_before_after.png")
    plt.close(fig)
    written.append("fig6_before_after.png")
    test["occupancy_raycast_correlation"] = corr
    return written


def _intersection_points(right: torch.Tensor, left: torch.Tensor, faces) -> np.ndarray:
    """The 125k-grid points inside both meshes of one pair, ``[K, 3]``."""
    points = intersection_grid(right[None], left[None], RESOLUTION)
    both = points_inside_mesh(points, right[None], faces[0]) & points_inside_mesh(points, left[None], faces[1])
    return points[0][both[0]].numpy()


def run(out: Path, sizes: Sizes = DEFAULT, progress: bool = True, export: bool = False) -> dict:
    """Runs the experiment (see the module docstring) into ``out`` and returns its results. Runs
    that finished before in ``out`` are kept (delete ``out`` to start over)."""
    started = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pairs = out / "pairs.pt"
    splits = {"train": (sizes.train_scenes, 0, sizes.views), "val": (sizes.val_scenes, 1, 1),
              "test": (sizes.test_scenes, 2, 1)}
    if not pairs.is_file() or torch.load(pairs, weights_only=True)["settings"] != splits:
        system.save_pairs(pairs, splits, progress)
    data_seconds = time.perf_counter() - started
    runner = _Runner(out, sizes, progress)
    options = sizes.options or tuple((p, a, t) for p in PER_POINTS for a in (1.0, 0.0) for t in (0.0, 1.0))
    studies = {"uplift": runner.study("uplift", sizes.presets[0], ("dense", 1.0, 0.0), sizes.weights, options,
                                      sizes.penetration_weights)}
    # the refiner: the uplift's chosen settings (the time of a full sweep of both is twice this one's)
    chosen = studies["uplift"]["chosen"]
    studies["refiner"] = runner.study("refiner", sizes.presets[1], (chosen["points"], chosen["alpha"], chosen["truncate"]),
                                      (chosen["weight"],), (), (studies["uplift"]["penetration"]["weight"],))
    rows, outputs = _test_rows(runner, studies, progress)
    faces = load_checkpoint(system, Path(studies["uplift"]["base"]["checkpoint"]))[0].faces
    test: dict = {"pairs": sizes.test_scenes}
    figures = _figures(out, rows, outputs, faces, sizes, test)
    if "occupancy_raycast_correlation" not in test:
        ray = np.concatenate([r["per_pair"]["intersections"] for r in rows])
        occ = np.concatenate([r["per_pair"]["occupancy"] for r in rows])
        test["occupancy_raycast_correlation"] = float(np.corrcoef(ray, occ)[0, 1]) if ray.std() and occ.std() else math.nan
    table = _table(rows, studies, sizes, sizes.test_scenes)
    table += f"\nOccupancy vs ray-cast count over every test pair and model: r = {test['occupancy_raycast_correlation']:.3f}.\n"
    seconds = time.perf_counter() - started
    table += f"Run time: {seconds / 60:.1f} min (data {data_seconds / 60:.1f} min), {torch.get_num_threads()} threads.\n"
    (out / "table.md").write_text(table)
    results = {"sizes": asdict(sizes), "seconds": seconds, "data_seconds": data_seconds, "test": test,
               "rows": [{k: v for k, v in r.items() if k != "per_pair"} for r in rows],
               "studies": studies, "figures": figures}
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    torch.save({"rows": rows}, out / "per_pair.pt")
    if export:
        _export(studies, rows)
    print(table)
    return results


def _export(studies: dict, rows: list[dict]) -> None:
    """The uplift's control (baseline) and chosen fine-tuned weights as the shipped files (each
    record names the baseline run it was fine-tuned from)."""
    for fine_tuned, (run, label) in {False: (studies["uplift"]["control"], "baseline"),
                                     True: (studies["uplift"]["chosen"], "+ intersection loss")}.items():
        row = next(r for r in rows if r["model"] == "uplift" and r["row"] == label)
        held_out = {**{k: v for k, v in row.items() if k != "per_pair"}, "test_pairs": len(row["per_pair"]["mpjpe"])}
        export_weights(Path(run["checkpoint"]), PRETRAINED[fine_tuned], held_out=held_out, system=system.name)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m handgeom.experiments.two_hands", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a tiny run that checks the pipeline, not the numbers")
    parser.add_argument("--out", type=Path, default=Path("runs/two_hands"), help="output directory")
    parser.add_argument("--export", action="store_true", help="write the uplift's weights to handgeom/weights")
    parser.add_argument("--fresh", action="store_true", help="delete --out first")
    args = parser.parse_args(argv)
    if args.fresh and args.out.exists():
        shutil.rmtree(args.out)
    run(args.out, QUICK if args.quick else DEFAULT, export=args.export)


if __name__ == "__main__":
    main()
