from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from prunegym.core.checkpoint import load_model, read_checkpoint
from prunegym.core.data import load_data
from prunegym.core.errors import CheckpointError
from prunegym.core.io import atomic_torch_save
from prunegym.core.models import build_model
from prunegym.core.train import TrainConfig, distillation_loss, teacher_logits, train


def _cfg(out: Path, **kw) -> TrainConfig:
    return TrainConfig(
        model="smallcnn", data="digits", out=str(out), epochs=3, batch_size=64, lr=0.05, warmup_epochs=0.5, seed=1, **kw
    )


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("smallcnn", in_channels=1)


def test_train_writes_checkpoints_tensorboard_and_learns(tmp_path: Path, digits) -> None:
    result = train(config=_cfg(tmp_path), model=_model(), data=digits, run_dir=tmp_path)
    assert result.best_val.top1 > 90.0  # 10 classes: chance is 10%
    assert result.test is not None and result.test.n == len(digits.test_y)
    ckpt = read_checkpoint(tmp_path / "last.pt")
    assert ckpt["epoch"] == 2 and ckpt["config"]["lr"] == 0.05 and ckpt["model"] == "smallcnn"
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 3
    # the best checkpoint rebuilds on its own and scores what was recorded
    best = load_model(str(tmp_path / "best.pt"))
    assert sum(p.numel() for p in best.parameters()) == sum(p.numel() for p in _model().parameters())


def test_resume_after_interruption_matches_an_uninterrupted_run(tmp_path: Path, digits) -> None:
    full = _model()
    train(config=_cfg(tmp_path / "full", eval_test=False), model=full, data=digits, run_dir=tmp_path / "full")

    def interrupt(phase: str, done: int, total: int, metrics: dict) -> None:
        if phase.startswith("epoch 2") and done == 3:
            raise KeyboardInterrupt

    part = _model()
    with pytest.raises(KeyboardInterrupt):
        train(
            config=_cfg(tmp_path / "part", eval_test=False),
            model=part,
            data=digits,
            run_dir=tmp_path / "part",
            progress=interrupt,
        )
    assert read_checkpoint(tmp_path / "part" / "last.pt")["epoch"] == 0
    resumed = _model()
    train(
        config=_cfg(tmp_path / "part", eval_test=False),
        model=resumed,
        data=digits,
        run_dir=tmp_path / "part",
        resume=True,
    )
    a = read_checkpoint(tmp_path / "full" / "last.pt")
    b = read_checkpoint(tmp_path / "part" / "last.pt")
    assert a["step"] == b["step"]
    for k, v in a["state_dict"].items():
        assert torch.allclose(v.float(), b["state_dict"][k].float(), atol=1e-6), k


def test_a_resumed_run_counts_the_training_time_of_the_sessions_before_it(tmp_path: Path, digits) -> None:
    cfg = replace(_cfg(tmp_path, eval_test=False), epochs=2)

    def interrupt(phase: str, done: int, total: int, metrics: dict) -> None:
        if phase.startswith("epoch 2"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config=cfg, model=_model(), data=digits, run_dir=tmp_path, progress=interrupt)
    ckpt = read_checkpoint(tmp_path / "last.pt")
    ckpt["history"][-1]["seconds"] = 5000.0  # as if the first session had trained for 5,000 s
    atomic_torch_save(tmp_path / "last.pt", ckpt)
    result = train(config=cfg, model=_model(), data=digits, run_dir=tmp_path, resume=True)
    history = read_checkpoint(tmp_path / "last.pt")["history"]
    assert [h["epoch"] for h in history] == [0, 1]
    assert 5000.0 < history[1]["seconds"] < 5000.0 + 600 and result.seconds > 5000.0


def test_poly_schedule_is_caffes_poly_policy() -> None:
    from prunegym.core.train import get_lr

    kw = {"total_steps": 1000, "warmup_steps": 0, "base_lr": 0.01, "schedule": "poly"}
    assert get_lr(0, **kw) == pytest.approx(0.01)
    assert get_lr(250, **kw) == pytest.approx(0.0075)  # power 1: linear to zero
    assert get_lr(500, **kw, power=2.0) == pytest.approx(0.0025)
    assert get_lr(1000, **kw) == 0.0


def test_distillation_from_a_teacher_runs_and_loss_is_zero_for_identical_logits() -> None:
    logits = torch.randn(4, 10)
    labels = logits.argmax(1)
    pure_kd = distillation_loss(logits, logits, labels, alpha=1.0, temperature=4.0)
    assert float(pure_kd) == pytest.approx(0.0, abs=1e-6)
    mixed = distillation_loss(logits, torch.randn(4, 10), labels, alpha=0.5, temperature=2.0)
    assert float(mixed) > 0


class _OneClassTeacher(torch.nn.Module):
    """A teacher that is sure every image is class ``label``: distillation alone must teach the student that."""

    def __init__(self, label: int) -> None:
        super().__init__()
        self.label = label
        self.scale = torch.nn.Parameter(torch.ones(()), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.full((x.shape[0], 10), -4.0, device=x.device)
        logits[:, self.label] = 4.0
        return logits * self.scale


def _share_predicting(model: torch.nn.Module, digits, label: int) -> float:
    from prunegym.core.data import normalize
    from prunegym.core.evaluate import input_norm

    mean, std = input_norm(model, mean=digits.mean, std=digits.std)
    model.eval()
    with torch.no_grad():
        x = normalize(torch.as_tensor(digits.val_x).float() / 255.0, mean=mean, std=std)
        return float((model(x).argmax(1) == label).float().mean())


def test_train_with_teacher_follows_the_teacher_not_the_labels(tmp_path: Path, digits) -> None:
    kw = {"eval_test": False}
    student = _model()
    result = train(
        config=_cfg(tmp_path / "kd", teacher="constant", kd_alpha=1.0, **kw),
        model=student,
        data=digits,
        run_dir=tmp_path / "kd",
        teacher=_OneClassTeacher(3),
    )
    assert result.epochs_done == 3
    assert _share_predicting(student, digits, 3) > 0.9  # pure distillation: the labels carry no weight
    plain = _model()
    train(config=_cfg(tmp_path / "ce", **kw), model=plain, data=digits, run_dir=tmp_path / "ce")
    assert _share_predicting(plain, digits, 3) < 0.3  # the same run without the teacher learns the digits


def test_a_bf16_teacher_runs_its_forward_in_bfloat16_and_hands_back_fp32_logits(digits) -> None:
    teacher = _model().eval()
    seen: list[torch.dtype] = []
    teacher.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    x = torch.randn(16, *digits.input_shape)
    fp32 = teacher_logits(teacher, x)
    bf16 = teacher_logits(teacher, x, precision="bf16")
    assert seen == [torch.float32, torch.bfloat16]
    assert fp32.dtype == bf16.dtype == torch.float32 and not fp32.requires_grad
    with torch.no_grad():
        assert torch.equal(fp32, teacher(x))  # fp32 is the plain forward, bit for bit
    assert not torch.equal(fp32, bf16)
    assert torch.allclose(fp32, bf16, atol=0.05 * float(fp32.abs().max()))  # bfloat16 keeps ~3 digits


def test_the_teachers_precision_is_part_of_the_schedule_a_resume_keeps(tmp_path: Path, digits) -> None:
    cfg = replace(_cfg(tmp_path, teacher="smallcnn", teacher_precision="bf16", eval_test=False), epochs=1)
    result = train(config=cfg, model=_model(), data=digits, run_dir=tmp_path, teacher=_model())
    assert result.epochs_done == 1
    assert read_checkpoint(tmp_path / "last.pt")["config"]["teacher_precision"] == "bf16"
    with pytest.raises(CheckpointError, match="teacher_precision 'bf16' → 'fp32'"):
        train(
            config=replace(cfg, teacher_precision="fp32"),
            model=_model(),
            data=digits,
            run_dir=tmp_path,
            teacher=_model(),
            resume=True,
        )


def test_device_choice_is_checked_with_a_one_line_fix() -> None:
    from prunegym.core.device import resolve_device
    from prunegym.core.errors import UserError

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(UserError, match="device must be"):
        _cfg(Path("unused"), device="tpu")
    with pytest.raises(UserError, match="unknown device"):
        resolve_device("cuda:x")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match=r"no CUDA GPU.*--device cpu"):
            resolve_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_training_on_a_gpu_matches_the_cpu_run_and_leaves_cpu_tensors(tmp_path: Path, digits) -> None:
    teacher = _model()
    cpu = train(
        config=_cfg(tmp_path / "cpu", device="cpu", teacher="smallcnn"),
        model=_model(),
        data=digits,
        run_dir=tmp_path / "cpu",
        teacher=teacher,
    )
    student = _model()
    gpu = train(
        config=_cfg(tmp_path / "gpu", device="cuda", teacher="smallcnn"),
        model=student,
        data=digits,
        run_dir=tmp_path / "gpu",
        teacher=teacher,
    )
    assert all(p.device.type == "cpu" for p in (*student.parameters(), *teacher.parameters()))
    assert all(t.device.type == "cpu" for t in read_checkpoint(tmp_path / "gpu" / "last.pt")["state_dict"].values())
    assert abs(gpu.best_val.top1 - cpu.best_val.top1) < 3.0  # same batches; kernels differ in rounding only


def test_no_val_split_trains_on_every_image_and_keeps_the_last_epoch(tmp_path: Path) -> None:
    data = load_data("digits", val_size=0, seed=1)
    assert len(data.val_x) == 0
    model = _model()
    result = train(config=_cfg(tmp_path, eval_test=False), model=model, data=data, run_dir=tmp_path)
    assert result.best_val is None and result.best_epoch == 2
    best, last = read_checkpoint(tmp_path / "best.pt"), read_checkpoint(tmp_path / "last.pt")
    assert best["epoch"] == last["epoch"] == 2
    assert all(torch.equal(best["state_dict"][k], v) for k, v in last["state_dict"].items())
    records = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(records) == 3 and all("val_top1" not in r for r in records)
