"""The one training loop of handgeom's networks; each system plugs in with its file in this folder.

A system (``handgeom/train/<name>.py``) provides its presets, its model, its data, its loss and its
evaluation (:class:`System`); :func:`train` does the rest: AdamW with linear warm-up and a cosine
schedule, gradient clipping, checkpoints and resume, evaluation every ``eval_every`` steps on a
held-out split, a JSON-lines log, a tqdm progress bar, bf16 autocast on CUDA, a final loss-curve
PNG, and data-parallel training over ``torchrun`` (DistributedDataParallel: gloo on CPU, nccl on
CUDA; each rank takes its share of every global batch).

Batches are a pure function of the step: step ``s`` takes the positions ``[s B, (s + 1) B)`` of a
fixed per-epoch permutation of the training set (seeded by the run's seed and the epoch), so a
resumed run sees exactly the batches the uninterrupted run would have seen, and ``N`` ranks split
each global batch of ``B`` by position (rank ``r`` takes every ``N``-th sample from ``r``).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler, Subset
from tqdm import tqdm

from handgeom.datasets.real import DatasetFormatError

__all__ = ["System", "TrainConfig", "train", "evaluate_checkpoint", "load_checkpoint", "export_weights", "StepBatches",
           "TrainError", "model_preset", "data_source", "Memoized"]

CHECKPOINT = "last.pt"
LOG = "log.jsonl"


class TrainError(ValueError):
    """A bad training or evaluation request (unknown preset, bad data path, missing checkpoint);
    the message is one line for the user."""


@dataclass
class TrainConfig:
    """Optimization settings of a run (a system's preset gives the defaults)."""

    steps: int = 1000
    batch: int = 16  # global batch, over all ranks
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup: int = 100
    clip: float = 5.0
    eval_every: int = 500
    eval_size: int = 200
    checkpoint_every: int = 250
    log_every: int = 10
    workers: int = 1  # DataLoader worker processes per rank
    scenes: int | None = None  # distinct training samples, kept once made (see Memoized); None: every sample new
    seed: int = 0
    model: dict[str, Any] = field(default_factory=dict)  # the system's model options
    loss: dict[str, float] = field(default_factory=dict)  # loss weights
    init: str | None = None  # the weights the run started from (fine-tuning), when not from scratch
    # their record (see _origin), read when the run starts: the file may be replaced before the
    # export, as shipped weights are by their own fine-tune's
    origin: dict[str, Any] | None = None


class System(Protocol):
    """What a system file provides to the loop."""

    name: str
    PRESETS: dict[str, TrainConfig]
    LOSS_TERMS: tuple[str, ...]  # the names ``--loss`` may weigh

    def build_model(self, config: TrainConfig) -> nn.Module: ...

    def dataset(self, data: str, split: str, config: TrainConfig, size: int, seed: int) -> Dataset: ...

    def loss(self, model: nn.Module, batch: dict, config: TrainConfig, step: int
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...  # step: for stage-wise schedules

    def evaluate(self, model: nn.Module, loader: DataLoader, config: TrainConfig) -> dict[str, Any]: ...

    def markdown(self, metrics: dict[str, Any]) -> str: ...


def data_source(data: str, synthetic: Callable[[], Dataset], readers: dict[str, Callable[[Path], Dataset]]) -> Dataset:
    """The dataset ``--data`` names: ``"synthetic"``, or ``NAME:PATH`` for one of ``readers``
    (each makes its dataset from the directory PATH). A missing directory, a reader's
    :class:`~handgeom.datasets.DatasetFormatError` or an unknown name is a one-line
    :class:`TrainError`."""
    if data == "synthetic":
        return synthetic()
    name, _, path = data.partition(":")
    if name in readers and path:
        root = Path(path)
        if not root.is_dir():
            raise TrainError(f"--data {data}: {root} is not a directory")
        try:
            return readers[name](root)
        except DatasetFormatError as error:
            raise TrainError(f"--data {data}: {error}") from None
    raise TrainError(f"--data must be {' or '.join(['synthetic'] + [f'{n}:PATH' for n in readers])}, got {data!r}")


def evaluation_set(system: System, data: str, config: TrainConfig, size: int, seed: int) -> Dataset:
    """The evaluation set: at most ``size`` samples of the system's ``"eval"`` split of ``data``,
    a random subset drawn with ``seed`` where the split is larger (a real dataset's; synthetic
    ones are drawn with ``size`` samples)."""
    dataset = system.dataset(data, "eval", config, size, seed)
    if len(dataset) <= size:
        return dataset
    return Subset(dataset, torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:size].tolist())


def model_preset(config: TrainConfig, presets: dict[str, Any]) -> Any:
    """The model preset a run's ``config.model`` names (default ``"cpu"``), from ``presets``."""
    name = config.model.get("preset", "cpu")
    if name not in presets:
        raise TrainError(f"unknown model preset {name!r}; known: {', '.join(sorted(presets))}")
    return presets[name]


class StepBatches(Sampler[list[int]]):
    """The global batches of steps ``start .. steps - 1`` (see the module docstring), this rank's
    share of each."""

    def __init__(self, size: int, batch: int, steps: int, seed: int, start: int = 0, rank: int = 0, world: int = 1):
        if batch % world:
            raise TrainError(f"--batch {batch} must be a multiple of the number of processes ({world})")
        if size < batch:
            raise TrainError(f"the training set ({size} samples) is smaller than one batch ({batch})")
        self.size, self.batch, self.steps, self.seed = size, batch, steps, seed
        self.start, self.rank, self.world = start, rank, world
        self.per_epoch = size // batch

    def __len__(self) -> int:
        return self.steps - self.start

    def __iter__(self) -> Iterator[list[int]]:
        perm, epoch = None, -1
        for step in range(self.start, self.steps):
            if step // self.per_epoch != epoch:
                epoch = step // self.per_epoch
                perm = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))
            k = step % self.per_epoch
            yield perm[k * self.batch + self.rank:(k + 1) * self.batch:self.world].tolist()


class Memoized(Dataset):
    """A dataset whose samples are kept in memory once made: a run of ``scenes`` synthetic samples
    renders each once, in its first epoch, and reads the later epochs back (each DataLoader worker
    keeps the samples it made; the training loader's workers live for the whole run)."""

    def __init__(self, dataset: Dataset):
        self.dataset, self.kept = dataset, {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        if index not in self.kept:
            self.kept[index] = self.dataset[index]
        return self.kept[index]


def _distributed(device: str) -> tuple[int, int]:
    """(rank, world size), initializing the process group when launched by torchrun: nccl for
    CUDA, gloo for the CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def _open_log(path: Path, start: int):
    """The JSON-lines log, for appending from step ``start``: a new run starts a new log; a
    resumed run keeps the records up to its checkpoint (those after it are repeated)."""
    kept = []
    if start > 0 and path.is_file():
        kept = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= start]
    log = path.open("w")
    log.writelines(line + "\n" for line in kept)
    return log


def _schedule(config: TrainConfig) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < config.warmup:
            return (step + 1) / config.warmup
        progress = (step - config.warmup) / max(config.steps - config.warmup, 1)
        return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return factor


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def train(system: System, preset: str, data: str, out: Path, steps: int | None = None, batch: int | None = None,
          resume: bool = False, device: str = "cpu", loss_weights: dict[str, float] | None = None,
          progress: bool = True, lr: float | None = None, init: Path | None = None, seed: int | None = None) -> Path:
    """Trains ``system``'s ``preset`` on ``data`` and returns the final checkpoint's path
    (``out/last.pt``); see the module docstring. ``resume`` continues ``out/last.pt``; ``init``
    starts a new run (fine-tuning) from the weights of a checkpoint or of shipped weights;
    ``seed`` (default the preset's, 0) draws the training data, so a fine-tune can see new scenes."""
    if resume and init is not None:
        raise TrainError("--init starts a new run from weights; --resume continues a run: choose one")
    if lr is not None and not lr > 0:
        raise TrainError(f"--lr must be positive, got {lr}")
    if preset not in system.PRESETS:
        raise TrainError(f"unknown preset {preset!r} for {system.name}; known: {', '.join(sorted(system.PRESETS))}")
    unknown = sorted(set(loss_weights or {}) - set(system.LOSS_TERMS))
    if unknown:
        raise TrainError(f"--loss: unknown terms {unknown}; known: {', '.join(system.LOSS_TERMS)}")
    if any(not w >= 0 for w in (loss_weights or {}).values()):
        raise TrainError(f"--loss: weights must be non-negative, got {loss_weights}")
    for flag, value in (("--steps", steps), ("--batch", batch)):
        if value is not None and value < 1:
            raise TrainError(f"{flag} must be positive, got {value}")
    rank, world = _distributed(device)
    out = Path(out)
    ckpt_path = out / CHECKPOINT
    state = None
    if resume:  # the run's own settings, from its checkpoint
        state = _read(ckpt_path, "checkpoint", "--resume: ")
        if (state.get("system"), state.get("preset"), state.get("data")) != (system.name, preset, data):
            raise TrainError(f"--resume: {ckpt_path} is a {state.get('system')} {state.get('preset')} run on {state.get('data')}, "
                             f"not {system.name} {preset} on {data}")
        config = TrainConfig(**state["config"])
        asked = {"--steps": (steps, config.steps), "--batch": (batch, config.batch), "--lr": (lr, config.lr),
                 "--seed": (seed, config.seed)}
        conflicts = [f"{flag} {mine} (the run's: {theirs})" for flag, (mine, theirs) in asked.items()
                     if mine is not None and mine != theirs]
        if loss_weights and {**config.loss, **loss_weights} != config.loss:
            conflicts.append(f"--loss {loss_weights} (the run's: {config.loss})")
        if conflicts:
            raise TrainError(f"--resume continues the run as it was started; drop {', '.join(conflicts)}")
        if state["step"] >= config.steps:
            raise TrainError(f"--resume: {ckpt_path} has finished its {config.steps} steps")
    else:
        base = system.PRESETS[preset]
        config = TrainConfig(**{**base.__dict__, **({"steps": steps} if steps else {}), **({"batch": batch} if batch else {}),
                                **({"lr": lr} if lr else {}), **({"seed": seed} if seed is not None else {}),
                                "loss": {**base.loss, **(loss_weights or {})},
                                "init": str(init) if init is not None else None})
    torch.manual_seed(config.seed)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    dev = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if device == "cuda" else device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    model = system.build_model(config).to(dev)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(config))
    start, history, seconds_before = 0, [], 0.0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        # training time so far (checkpoints written before 2026-12-07 lack it)
        start, history, seconds_before = state["step"], state["history"], state.get("seconds", 0.0)
    elif init is not None:
        weights, config.origin = _weights(system, Path(init))
        model.load_state_dict(weights)
    train_set = system.dataset(data, "train", config, config.scenes or config.steps * config.batch, config.seed)
    if config.scenes:
        train_set = Memoized(train_set)
    eval_set = evaluation_set(system, data, config, config.eval_size, config.seed + 1)  # another seed
    sampler = StepBatches(len(train_set), config.batch, config.steps, config.seed, start, rank, world)
    loader = DataLoader(train_set, batch_sampler=sampler, num_workers=config.workers,
                        persistent_workers=False, pin_memory=dev.type == "cuda")
    wrapped = model if world == 1 else nn.parallel.DistributedDataParallel(
        model, device_ids=[dev.index] if dev.type == "cuda" else None)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else torch.autocast("cpu", enabled=False)
    log = _open_log(out / LOG, start) if rank == 0 else None
    started = time.perf_counter() - seconds_before  # the clock of the whole run, across resumes
    bar = tqdm(loader, total=len(sampler), initial=0, desc=f"{system.name} {preset}", disable=not progress or rank != 0)
    step = start
    record: dict[str, Any] = {}
    for step_batch in bar:
        model.train()
        with autocast:
            loss, terms = system.loss(wrapped, _to(step_batch, dev), config, step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip)
        optimizer.step()
        scheduler.step()
        step += 1
        if rank == 0:
            record = {"step": step, "loss": loss.item(), "lr": scheduler.get_last_lr()[0],
                      **{k: float(v) for k, v in terms.items()}, "seconds": time.perf_counter() - started}
            history.append({"step": step, "loss": record["loss"]})
            bar.set_postfix(loss=f"{record['loss']:.4g}", refresh=False)
            if step % config.log_every == 0 or step == config.steps:
                log.write(json.dumps(record) + "\n")
                log.flush()
            if step % config.eval_every == 0 and step < config.steps:
                metrics = _evaluate(system, model, eval_set, config, dev)
                log.write(json.dumps({"step": step, "eval": metrics}) + "\n")
                log.flush()
        if step % config.checkpoint_every == 0 or step == config.steps:
            if rank == 0:
                _save(ckpt_path, system, preset, config, model, optimizer, scheduler, step, history, data,
                      time.perf_counter() - started)
            if world > 1:
                dist.barrier()
    if rank == 0:
        metrics = _evaluate(system, model, eval_set, config, dev)
        seconds = time.perf_counter() - started
        log.write(json.dumps({"step": step, "eval": metrics, "seconds": seconds}) + "\n")
        log.close()
        _save(ckpt_path, system, preset, config, model, optimizer, scheduler, step, history, data, seconds,
              final={"eval": metrics, "train_seconds": seconds, "last": record})
        (out / "eval.md").write_text(system.markdown(metrics))
        _loss_curve(history, out / "loss.png", f"{system.name} {preset}")
    if world > 1:
        dist.barrier()
    return ckpt_path


def _evaluate(system: System, model: nn.Module, dataset: Dataset, config: TrainConfig, device: torch.device) -> dict:
    loader = DataLoader(dataset, batch_size=min(config.batch, 32), num_workers=config.workers)
    model.eval()
    with torch.no_grad():
        return system.evaluate(model, loader, config)


def _save(path: Path, system: System, preset: str, config: TrainConfig, model: nn.Module, optimizer, scheduler,
          step: int, history: list, data: str, seconds: float, final: dict | None = None) -> None:
    state = {"system": system.name, "preset": preset, "config": config.__dict__, "data": data, "step": step,
             "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "history": history, "seconds": seconds, "final": final}
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def _read(path: Path, what: str, flag: str = "") -> dict:
    """A dict written by ``torch.save`` (a checkpoint or shipped weights), on the CPU; a missing,
    unreadable or foreign file is a one-line :class:`TrainError` (prefixed by ``flag``)."""
    path = Path(path)
    if not path.is_file():
        raise TrainError(f"{flag}no {what} at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # a truncated or foreign file: torch raises several kinds
        raise TrainError(f"{flag}{path}: not a readable {what} ({type(error).__name__})") from None
    if not isinstance(state, dict):
        raise TrainError(f"{flag}{path}: not a {what}")
    return state


def _weights(system: System, path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The float32 state dict of a checkpoint of ``system`` or of its shipped weights (``--init``),
    and the file's :func:`_origin` (from the same read)."""
    state = _read(path, "weights", "--init: ")
    record, weights = state.get("record", state), state.get("model", state.get("state_dict"))
    if record.get("system") != system.name or weights is None:
        raise TrainError(f"--init: {path} holds no {system.name} weights")
    return _float32(weights), _origin(path, state)


def _float32(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict with its floating-point tensors in float32 (shipped weights store float16)."""
    return {k: v.float() if v.is_floating_point() else v for k, v in weights.items()}


def load_checkpoint(system: System, path: Path, device: str = "cpu") -> tuple[nn.Module, TrainConfig, dict]:
    """The model of a checkpoint written by :func:`train`, or of shipped weights written by
    :func:`export_weights` (their preset's config with the record's settings), in eval mode, with
    its config and state."""
    state = _read(path, "checkpoint")
    if "record" in state and "state_dict" in state:  # shipped weights: a checkpoint's fields from the record
        record = state["record"]
        if record.get("system") != system.name or record.get("preset") not in system.PRESETS:
            raise TrainError(f"{path}: not {system.name} weights of a known preset")
        preset = system.PRESETS[record["preset"]]
        config = replace(preset, seed=record.get("seed", preset.seed), model=record.get("model", preset.model),
                         loss=record.get("loss", preset.loss))
        state = {"system": system.name, "config": asdict(config), "step": record["steps"], "preset": record["preset"],
                 "data": record["data"], "model": _float32(state["state_dict"])}
    if state.get("system") != system.name:
        raise TrainError(f"{path}: not a {system.name} checkpoint")
    config = TrainConfig(**state["config"])
    model = system.build_model(config).to(device)
    model.load_state_dict(state["model"])
    return model.eval(), config, state


def evaluate_checkpoint(system: System, path: Path, data: str, out: Path | None = None, size: int | None = None,
                        seed: int = 1, device: str = "cpu") -> dict:
    """``handgeom eval``: the system's metrics of a checkpoint on ``size`` samples of ``data``
    drawn with ``seed`` (held out when it is not the training seed), written to ``out`` as
    ``eval.json`` and ``eval.md`` when given (and the system's ``figures``, if it has them)."""
    model, config, state = load_checkpoint(system, path, device)
    if seed == config.seed and data == state["data"]:
        raise TrainError(f"--seed {seed} is the training seed of {path}: choose another for held-out data")
    config.eval_size = size or config.eval_size
    dataset = evaluation_set(system, data, config, config.eval_size, seed)
    metrics = _evaluate(system, model, dataset, config, torch.device(device))
    metrics["checkpoint"] = {"path": str(path), "step": state["step"], "preset": state["preset"], "data": data,
                             "eval_seed": seed}
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "eval.json").write_text(json.dumps(metrics, indent=2))
        (out / "eval.md").write_text(system.markdown(metrics))
        if hasattr(system, "figures"):  # a system's pictures of its evaluation
            with torch.no_grad():
                system.figures(model, metrics, dataset, out)
    return metrics


def export_weights(checkpoint: Path, path: Path, half: bool = True, held_out: dict | None = None,
                   system: str | None = None) -> dict:
    """Writes a checkpoint's model as shipped weights: the state dict (float16 storage when
    ``half``; loaded back as float32) and its training record (system, preset, steps, batch, lr,
    data and seed, training time, the final evaluation, ``held_out``: the metrics of ``handgeom
    eval``, when given, and for a fine-tuned run ``fine_tuned_from``: the record of the weights
    it started from, or the settings of the checkpoint). ``system``: the name the checkpoint must
    have. Returns the record."""
    state = _read(checkpoint, "checkpoint")
    if system is not None and state.get("system") != system:
        raise TrainError(f"{checkpoint}: not a {system} checkpoint")
    final = state.get("final") or {}
    config = state["config"]
    record = {"system": state["system"], "preset": state["preset"], "model": config["model"],
              "steps": state["step"], "batch": config["batch"], "lr": config["lr"], "data": state["data"],
              "seed": config["seed"], "loss": config["loss"],
              "train_seconds": final.get("train_seconds"), "eval": final.get("eval"), "held_out": held_out,
              "date": time.strftime("%Y-%m-%d"), "torch": str(torch.__version__)}
    if config.get("init"):
        record["fine_tuned_from"] = _started_from(config)
    weights = {k: v.half() if half and v.is_floating_point() else v for k, v in state["model"].items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"record": record, "state_dict": weights}, path)
    return record


def _origin(init: Path, state: dict | None = None) -> dict:
    """What a fine-tuned run started from: the record of shipped weights (which may name their
    own origin), or a checkpoint's run settings and, if it was a fine-tune too, its origin; just
    the path when the file is gone. ``state``: the file's contents, when already read."""
    if state is None:
        if not init.is_file():
            return {"path": str(init)}
        state = _read(init, "weights")
    if "record" in state:
        return state["record"]
    final, config = state.get("final") or {}, state.get("config") or {}
    origin = {"path": str(init), "preset": state.get("preset"), "steps": state.get("step"),
              "batch": config.get("batch"), "lr": config.get("lr"), "data": state.get("data"),
              "seed": config.get("seed"), "train_seconds": final.get("train_seconds")}
    if config.get("init"):
        origin["fine_tuned_from"] = _started_from(config)
    return origin


def _started_from(config: dict) -> dict:
    """The origin of a fine-tuned run's config: as read when it started (runs before 2026-12-07
    lack it: then read now)."""
    return config.get("origin") or _origin(Path(config["init"]))


def _loss_curve(history: list[dict], path: Path, title: str) -> None:
    """The training loss against the step, as a PNG (needs matplotlib, the optional "plots" extra)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"matplotlib is not installed: no {path} (pip install matplotlib)")
        return
    steps = [h["step"] for h in history]
    losses = [h["loss"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    ax.plot(steps, losses, lw=0.6, alpha=0.4, label="loss")
    k = max(len(losses) // 50, 1)
    smooth = [sum(losses[max(0, i - k):i + 1]) / len(losses[max(0, i - k):i + 1]) for i in range(len(losses))]
    ax.plot(steps, smooth, lw=1.5, label=f"running mean ({k + 1} steps)")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
