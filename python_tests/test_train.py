"""The training loop (with the DIR system's tiny preset): resume, data-parallel training over
torchrun, evaluation of a checkpoint, shipped-weight export, and the command line's errors."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from handgeom.__main__ import main
from handgeom.train import evaluate_checkpoint, export_weights, load_checkpoint, system, train
from handgeom.train import loop
from handgeom.train.loop import StepBatches, TrainError

DIR = system("dir")


def weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def test_step_batches_are_a_function_of_the_step():
    full = list(StepBatches(10, 4, 7, seed=3))
    assert [len(b) for b in full] == [4] * 7
    assert list(StepBatches(10, 4, 7, seed=3, start=4)) == full[4:]
    ranks = [list(StepBatches(10, 4, 7, seed=3, rank=r, world=2)) for r in range(2)]
    for step in range(7):
        assert sorted(ranks[0][step] + ranks[1][step]) == sorted(full[step])
    assert all(len(set(b)) == 4 for b in full[:2]) and set(full[0] + full[1]) <= set(range(10))
    with pytest.raises(TrainError, match="multiple"):
        StepBatches(10, 3, 2, 0, world=2)


def test_memoized_makes_each_sample_once():
    made = []

    class Counting(torch.utils.data.Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, index):
            made.append(index)
            return {"x": torch.tensor(index)}

    data = loop.Memoized(Counting())
    assert len(data) == 3 and [int(data[i]["x"]) for i in (0, 2, 0, 2, 1)] == [0, 2, 0, 2, 1]
    assert made == [0, 2, 1]


def test_resume_gives_the_same_weights(tmp_path, monkeypatch):
    straight = train(DIR, "tiny", "synthetic", tmp_path / "a", progress=False)
    save = loop._save

    def interrupt_after_step_2(path, *args, **kwargs):
        save(path, *args, **kwargs)
        if args[6] == 2:  # the step
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "_save", interrupt_after_step_2)
    with pytest.raises(KeyboardInterrupt):
        train(DIR, "tiny", "synthetic", tmp_path / "b", progress=False)
    monkeypatch.setattr(loop, "_save", save)
    seconds_at_2 = torch.load(tmp_path / "b" / loop.CHECKPOINT, weights_only=False)["seconds"]
    resumed = train(DIR, "tiny", "synthetic", tmp_path / "b", resume=True, progress=False)
    a, b = weights(straight), weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    log = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4]
    # the clock runs across the resume: the record's training time includes the first part's
    assert 0 < seconds_at_2 < [r["seconds"] for r in log if "loss" in r][2]
    assert torch.load(resumed, weights_only=False)["final"]["train_seconds"] > seconds_at_2


def test_seed_draws_other_training_scenes(tmp_path):
    path = train(DIR, "tiny", "synthetic", tmp_path / "s", progress=False, seed=2)
    assert torch.load(path, map_location="cpu", weights_only=False)["config"]["seed"] == 2
    assert not all(torch.equal(a, b) for a, b in zip(weights(path).values(), weights(
        train(DIR, "tiny", "synthetic", tmp_path / "d", progress=False)).values()))
    with pytest.raises(TrainError, match=r"drop --seed 3 \(the run's: 2\)"):
        train(DIR, "tiny", "synthetic", tmp_path / "s", resume=True, seed=3, progress=False)


TORCHRUN_SCRIPT = textwrap.dedent("""
    import sys, torch, torch.distributed as dist
    from pathlib import Path
    from handgeom.train import system, train
    dir_system = system("dir")
    built = []
    build = dir_system.build_model
    dir_system.build_model = lambda config: built.append(build(config)) or built[-1]
    out = Path(sys.argv[1])
    train(dir_system, "tiny", "synthetic", out, steps=3, batch=4, progress=False)
    torch.save(built[0].state_dict(), out / f"rank{dist.get_rank()}.pt")
""")


def test_two_process_torchrun_equals_one_process(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(TORCHRUN_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
                    str(tmp_path / "ddp")], check=True, env=env, capture_output=True, timeout=600)
    single = weights(train(DIR, "tiny", "synthetic", tmp_path / "one", steps=3, batch=4, progress=False))
    ranks = [torch.load(tmp_path / "ddp" / f"rank{r}.pt", weights_only=True) for r in range(2)]
    worst = 0.0
    for key, value in single.items():
        assert torch.equal(ranks[0][key], ranks[1][key]), key  # identical on both ranks
        if value.is_floating_point():  # the same global batch: the same update, up to summation order
            worst = max(worst, float((ranks[0][key] - value).abs().max()))
    # Adam turns rounding-level gradient differences into update differences of up to ~1% of the
    # learning rate where gradients are small; a batch split whose losses do not decompose per
    # sample (the class-weighted segmentation mean over the whole batch) gave 2e-4 here
    assert worst < 0.02 * DIR.PRESETS["tiny"].lr * 3, worst
    assert (tmp_path / "ddp" / "last.pt").is_file()


def test_eval_and_export_of_a_tiny_checkpoint(tmp_path, capsys):
    ckpt = train(DIR, "tiny", "synthetic", tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "eval.md").read_text().startswith("2 held-out samples")
    metrics = evaluate_checkpoint(DIR, ckpt, "synthetic", tmp_path / "eval", size=3)
    assert metrics["samples"] == 3 and metrics["checkpoint"]["step"] == 4
    for stage in ("initial", "stage1", "stage2"):
        assert {"mpjpe_right", "mpjpe_left", "mpvpe_right", "mpjpe_aligned", "mrrpe", "joints_2d_px"} <= set(metrics[stage])
    assert {"intersections", "volume_cm3", "depth_mm"} == set(metrics["last"])
    assert json.loads((tmp_path / "eval" / "eval.json").read_text())["samples"] == 3
    main(["eval", "dir", str(ckpt), "--size", "2", "--out", str(tmp_path / "cli")])
    assert "| stage1 |" in capsys.readouterr().out
    record = export_weights(ckpt, tmp_path / "shipped.pt")
    assert record["steps"] == 4 and record["eval"]["samples"] == 2 and record["model"] == {"preset": "tiny"}
    main(["export", "dir", str(ckpt), "--to", str(tmp_path / "cli.pt"), "--eval", str(tmp_path / "eval" / "eval.json")])
    assert torch.load(tmp_path / "cli.pt", weights_only=True)["record"]["held_out"]["samples"] == 3
    shipped = torch.load(tmp_path / "shipped.pt", weights_only=True)
    assert all(v.dtype != torch.float32 for v in shipped["state_dict"].values())
    model, _, _ = load_checkpoint(DIR, ckpt)
    assert not model.training
    # shipped weights evaluate as their checkpoint does (float32 weights: the same numbers)
    export_weights(ckpt, tmp_path / "full.pt", half=False)
    again = evaluate_checkpoint(DIR, tmp_path / "full.pt", "synthetic", size=3)
    assert {k: v for k, v in again.items() if k != "checkpoint"} == {k: v for k, v in metrics.items() if k != "checkpoint"}
    assert again["checkpoint"]["step"] == 4 and again["checkpoint"]["preset"] == "tiny"


def test_init_fine_tunes_from_a_checkpoint_or_shipped_weights(tmp_path):
    ckpt = train(DIR, "tiny", "synthetic", tmp_path / "run", progress=False)
    export_weights(ckpt, tmp_path / "shipped.pt")
    start, _, _ = load_checkpoint(DIR, ckpt)
    for source in (ckpt, tmp_path / "shipped.pt"):
        tuned = train(DIR, "tiny", "synthetic", tmp_path / f"tuned_{source.stem}", steps=1, lr=1e-12, init=source,
                      progress=False)
        model, config, _ = load_checkpoint(DIR, tuned)
        assert config.init == str(source) and config.lr == 1e-12
        for (name, a), b in zip(start.state_dict().items(), model.state_dict().values()):
            if a.is_floating_point() and "running" not in name:  # fp16 storage of the shipped weights
                assert torch.allclose(a, b, atol=2e-3, rtol=2e-3), name
        # the fine-tuned weights' record says where they started: the first run's 4 steps
        record = export_weights(tuned, tmp_path / f"tuned_{source.stem}.pt")
        assert record["steps"] == 1 and record["lr"] == 1e-12 and record["fine_tuned_from"]["steps"] == 4
    # a fine-tune of a fine-tune's checkpoint names the whole chain
    again = train(DIR, "tiny", "synthetic", tmp_path / "again", steps=1, lr=1e-12, init=tmp_path / "tuned_last" / "last.pt",
                  progress=False)
    origin = export_weights(again, tmp_path / "again.pt")["fine_tuned_from"]
    assert origin["steps"] == 1 and origin["fine_tuned_from"]["steps"] == 4 and origin["fine_tuned_from"]["lr"] != 1e-12
    # the origin is read when the run starts: exporting a fine-tune over the weights it started
    # from, twice, keeps the chain (it did not: the second export named the first as its origin)
    for _ in range(2):
        record = export_weights(tmp_path / "tuned_shipped" / "last.pt", tmp_path / "shipped.pt")
        assert record["fine_tuned_from"]["steps"] == 4 and "fine_tuned_from" not in record["fine_tuned_from"]


@pytest.mark.parametrize("argv, words", [
    (["train", "dir", "--preset", "huge"], "unknown preset"),
    (["train", "dir", "--preset", "tiny", "--data", "nowhere"], "--data"),
    (["train", "dir", "--preset", "tiny", "--data", "interhand:/no/such/dir"], "not a directory"),
    (["train", "dir", "--preset", "tiny", "--loss", "chamfer=1"], "unknown terms"),
    (["train", "dir", "--preset", "tiny", "--loss", "seg=-1"], "non-negative"),
    (["train", "dir", "--preset", "tiny", "--resume"], "no checkpoint"),
    (["train", "dir", "--preset", "tiny", "--loss", "seg"], "name=weight"),
    (["train", "dir", "--preset", "tiny", "--steps", "-3"], "positive"),
    (["eval", "dir", "/no/such/checkpoint.pt"], "no checkpoint"),
    (["train", "dir", "--preset", "tiny", "--init", "/no/such/weights.pt"], "no weights"),
    (["train", "dir", "--preset", "tiny", "--init", "/no/such/weights.pt", "--resume"], "choose one"),
    (["train", "dir", "--preset", "tiny", "--lr", "0"], "--lr"),
    (["export", "dir", "/no/such/checkpoint.pt", "--to", "/tmp/never.pt"], "no checkpoint"),
    (["train", "handobject", "--preset", "huge"], "unknown preset"),
    (["train", "handobject", "--preset", "tiny", "--data", "ho3d:/no/such/dir"], "not a directory"),
    (["train", "handobject", "--preset", "tiny", "--data", f"dexycb:{Path(__file__).parent}"], "no subject folders"),
    (["train", "handobject", "--preset", "tiny", "--data", "interhand:/x"], "--data"),
    (["train", "handobject", "--preset", "tiny", "--loss", "penetration=-1"], "non-negative"),
    (["eval", "handobject", "/no/such/checkpoint.pt"], "no checkpoint"),
])
def test_cli_bad_input_is_one_line(argv, words, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv + (["--out", str(tmp_path / "out")] if argv[0] == "train" else []))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("handgeom: error:") and words in err and "\n" not in err, err


def test_cli_rejects_a_foreign_checkpoint(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit):
        main(["eval", "dir", str(bad)])
    assert "not a readable checkpoint" in capsys.readouterr().err
