"""Resume never serves stale results: a replay rerun with other settings redoes what they change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prunegym.cli.main import main
from prunegym.core.checkpoint import read_checkpoint
from prunegym.core.io import read_jsonl
from prunegym.deploy.bundle import write_bundle

FAST = [
    "--max-steps-per-epoch",
    "4",
    "--calib-images",
    "32",
    "--bench-threads",
    "1",
    "--bench-repeats",
    "3",
    "--bench-rounds",
    "1",
    "--bench-batch",
    "8",
]


def _replay(run: Path, out: Path, *extra: str) -> int:
    return main(["replay", "--run", str(run), "--out", str(out), *FAST, *extra])


@pytest.fixture(scope="module")
def search_run(digits_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("search") / "rand"
    args = ["agent", "train", "--model", str(digits_model), "--data", "digits", "--val-size", "200"]
    args += ["--bn-recalib-images", "100", "--agent", "random", "--episodes", "3", "--out", str(out)]
    assert main(args) == 0
    return out


def test_a_replay_rerun_with_another_schedule_redoes_the_finetune_and_everything_after_it(
    search_run: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "replay"
    assert _replay(search_run, out, "--epochs", "1") == 0
    report = json.loads((out / "bundle" / "report.json").read_text())
    assert report["finetune"]["epochs"] == 1
    stamps = json.loads((out / "steps.json").read_text())
    assert stamps["finetune"]["settings"]["epochs"] == 1
    assert "teacher_precision" not in stamps["finetune"]["settings"]  # fp32: replays made before it stay fresh

    # the same settings again: nothing is redone
    before = {p: p.stat().st_mtime_ns for p in (out / "pruned.pt", out / "model.pt", out / "bundle" / "report.json")}
    (out / ".model.pt.x1y2.tmp").write_text("half-written by a killed run")
    assert _replay(search_run, out, "--epochs", "1") == 0
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert not (out / ".model.pt.x1y2.tmp").exists()  # leftovers are cleaned on resume

    # another schedule: the finetune restarts (the old one kept), transform … bundle follow
    caplog.clear()
    assert _replay(search_run, out, "--epochs", "2", "--lr", "0.05") == 0
    assert "redoing replay step finetune" in caplog.text and "epochs 1 → 2" in caplog.text
    assert [m["epoch"] for m in read_jsonl(out / "finetune" / "metrics.jsonl")] == [0, 1]
    assert (out / "finetune.previous").is_dir()
    report = json.loads((out / "bundle" / "report.json").read_text())
    assert report["finetune"]["epochs"] == 2
    assert (out / "pruned.pt").stat().st_mtime_ns == before[out / "pruned.pt"]  # the policy did not change
    assert (out / "model.pt").stat().st_mtime_ns != before[out / "model.pt"]

    # another benchmark setting: only bench and bundle are redone
    model_time = (out / "model.pt").stat().st_mtime_ns
    caplog.clear()
    assert _replay(search_run, out, "--epochs", "2", "--lr", "0.05", "--bench-repeats", "4") == 0
    assert "redoing replay step bench" in caplog.text and "redoing replay step finetune" not in caplog.text
    assert (out / "model.pt").stat().st_mtime_ns == model_time
    assert json.loads((out / "steps.json").read_text())["bench"]["settings"]["bench_repeats"] == 4

    # the teacher in bfloat16: other soft targets, so another finetune
    caplog.clear()
    assert _replay(search_run, out, "--epochs", "2", "--lr", "0.05", "--teacher-precision", "bf16") == 0
    assert "redoing replay step finetune" in caplog.text
    assert json.loads((out / "steps.json").read_text())["finetune"]["settings"]["teacher_precision"] == "bf16"
    assert read_checkpoint(out / "finetune" / "last.pt")["config"]["teacher_precision"] == "bf16"


def test_rewriting_a_bundle_swaps_it_whole(tmp_path: Path) -> None:
    fp32, int8 = tmp_path / "a.onnx", tmp_path / "b.onnx"
    fp32.write_bytes(b"fp32")
    int8.write_bytes(b"int8")
    extra = tmp_path / "p.png"
    extra.write_bytes(b"\x89PNG")
    pre = {"channels": 1, "input_size": [8, 8], "mean": [0.5], "std": [0.25]}
    kw = {"fp32_onnx": fp32, "int8_onnx": int8, "preprocessing": pre}
    out = tmp_path / "bundle"
    write_bundle(out, labels=["a", "b"], report={"v": 1}, extras={"plots/p.png": extra}, **kw)
    write_bundle(out, labels=["a", "b"], report={"v": 2}, overwrite=True, **kw)
    assert json.loads((out / "report.json").read_text()) == {"v": 2} and not (out / "plots").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # nothing left behind
    with pytest.raises(Exception, match="outside the bundle"):
        write_bundle(out, labels=["a"], report={}, extras={"../escape.png": extra}, overwrite=True, **kw)


def _train(out: Path, *extra: str) -> int:
    args = ["train", "--model", "smallcnn", "--data", "digits", "--batch-size", "64", "--max-steps-per-epoch", "3"]
    return main([*args, "--out", str(out), *extra])


def test_a_killed_training_keeps_every_metrics_line_and_a_changed_schedule_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "t"
    assert _train(out, "--epochs", "2") == 0
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2
    # a kill after the checkpoint of epoch 2 but before its metrics line: the line comes back on resume
    (out / "metrics.jsonl").write_text(lines[0] + "\n")
    assert _train(out, "--epochs", "3", "--resume") == 2  # another schedule: refused, in one line
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "epochs 2 → 3" in err, err
    assert _train(out, "--epochs", "2", "--resume") == 0
    assert (out / "metrics.jsonl").read_text().splitlines() == lines


def test_a_model_trained_on_another_input_size_is_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "t"
    assert _train(out, "--epochs", "1") == 0
    capsys.readouterr()
    assert main(["eval", "--model", str(out), "--data", "digits?size=16"]) == 2
    err = capsys.readouterr().err.strip()
    assert "trained on 1×8×8 images but --data digits?size=16 gives 1×16×16" in err, err


def test_resume_needs_only_out_and_a_finished_run_returns_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import time

    out = tmp_path / "t"
    assert _train(out, "--epochs", "1") == 0
    t = time.perf_counter()
    assert main(["train", "--out", str(out), "--resume"]) == 0  # model, data, schedule from its config.yaml
    assert time.perf_counter() - t < 5.0 and "already trained" in capsys.readouterr().out
    assert main(["train", "--out", str(out), "--model", "nosuchmodel", "--data", "digits"]) == 2  # refused first
    assert "already holds a run" in capsys.readouterr().err


def test_a_replay_rerun_on_openvino_verifies_and_benchmarks_there_without_another_finetune(
    search_run: Path, tmp_path: Path
) -> None:
    pytest.importorskip("openvino")
    out = tmp_path / "replay"
    assert _replay(search_run, out, "--epochs", "1") == 0
    finetuned = (out / "model.pt").stat().st_mtime_ns
    assert _replay(search_run, out, "--epochs", "1", "--runtime", "openvino") == 0
    assert (out / "model.pt").stat().st_mtime_ns == finetuned  # the runtime changes verify, bench and bundle only
    verify = json.loads((out / "verify.json").read_text())
    assert verify["runtime"]["runtime"] == "openvino"
    report = json.loads((out / "bundle" / "report.json").read_text())
    assert report["latency"]["runtime"] == "openvino" and report["latency"]["provider"] == "OpenVINO:CPU"
    assert report["notes"][0].startswith("Accuracy measured by OpenVINO on ")
    assert "Latency and FPS measured with OpenVINO" in (out / "bundle" / "report.md").read_text()


def test_a_replay_with_no_val_split_finetunes_on_every_image_and_ships_the_last_epoch(
    search_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "replay"
    assert _replay(search_run, out, "--epochs", "2", "--val-size", "0") == 0
    report = json.loads((out / "bundle" / "report.json").read_text())
    assert report["finetune"]["kept"].startswith("the last epoch") and report["finetune"]["best_val_top1"] is None
    assert json.loads((out / "steps.json").read_text())["finetune"]["settings"]["val_size"] == 0
    assert read_checkpoint(out / "finetune" / "best.pt")["epoch"] == 1
