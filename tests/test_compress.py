"""Deep Compression: Huffman and the .dc file round trip bit-exactly, sharing bounds the values, masks hold, the
command runs, resumes and refuses a corrupt file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from prunegym.cli.main import main
from prunegym.core.checkpoint import load_model
from prunegym.core.dc_format import SharedLayer, read_dc, write_dc
from prunegym.core.errors import CheckpointError
from prunegym.core.huffman import huffman_decode, huffman_encode
from prunegym.core.models import build_model
from prunegym.workflow.fine_grained import MaskKeeper, agp_sparsity, magnitude_masks, prunable_weights
from prunegym.workflow.weight_sharing import finetune_centroids, share_weights


@pytest.fixture(scope="module")
def digits32():
    from prunegym.core.data import load_data

    return load_data("digits?size=32")


@pytest.mark.parametrize("stream", [[7], [3, 3, 3, 3], [0, 1, 2, 1, 0, 0, 0, 5, 16, 16], list(range(40)) * 3])
def test_huffman_round_trip_is_exact(stream: list[int]) -> None:
    data, count, order = huffman_encode(np.array(stream))
    assert huffman_decode(data, count, order, n=len(stream)).tolist() == stream


def test_huffman_codes_a_skewed_stream_in_fewer_bits_than_fixed_width() -> None:
    rng = np.random.default_rng(0)
    stream = rng.choice(16, size=10_000, p=np.r_[0.7, np.full(15, 0.02)])
    data, count, order = huffman_encode(stream)
    p = np.bincount(stream, minlength=16) / len(stream)
    entropy_bytes = -(p[p > 0] * np.log2(p[p > 0])).sum() * len(stream) / 8  # ≈ 2.05 bits a symbol
    assert entropy_bytes <= len(data) < 1.1 * entropy_bytes < 10_000 * 4 / 8  # near the bound, far under 4 bits
    assert np.array_equal(huffman_decode(data, count, order, n=len(stream)), stream)
    with pytest.raises(ValueError, match="corrupt Huffman stream"):
        huffman_decode(data[: len(data) // 2], count, order, n=len(stream))


def _shared_resnet20(sparsity: float = 0.9) -> tuple[nn.Module, dict[str, SharedLayer]]:
    model = build_model("resnet20")
    g = torch.Generator().manual_seed(0)
    book = np.linspace(-0.25, 0.25, 16, dtype=np.float32)
    layers = {}
    with torch.no_grad():
        for name, w in prunable_weights(model).items():
            shared = torch.from_numpy(book)[torch.randint(0, 16, w.shape, generator=g)]
            shared[torch.rand(w.shape, generator=g) < sparsity] = 0
            w.copy_(shared)
            layers[name] = SharedLayer(codebook=book, bits=4, index_bits=3, order="csc" if w.ndim == 2 else "csr")
    return model, layers


def test_dc_file_reads_back_every_tensor_exactly(tmp_path: Path) -> None:
    model, layers = _shared_resnet20()
    with torch.no_grad():  # a run of 500 zeros: far over the 3-bit gap, so fillers are needed
        model.layer3[0].conv1.weight.view(-1)[:500] = 0
    state = model.state_dict()
    path = write_dc(
        tmp_path / "m.dc",
        meta={"model": "resnet20", "num_classes": 10, "in_channels": 3},
        state_dict=state,
        shared=layers,
    )
    back = read_dc(path)["state_dict"]
    assert list(back) == list(state)
    for k, v in state.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v), k
    assert path.stat().st_size < sum(v.numel() * v.element_size() for v in state.values()) / 10
    reloaded = load_model(str(path))  # through the checkpoint path, as `eval --model m.dc` does
    x = torch.randn(2, 3, 32, 32)
    model.eval(), reloaded.eval()
    assert torch.equal(reloaded(x), model(x))


def test_dc_refuses_weights_that_are_not_in_the_codebook(tmp_path: Path) -> None:
    model, layers = _shared_resnet20()
    with torch.no_grad():
        model.conv1.weight.view(-1)[0] = 0.123
    with pytest.raises(ValueError, match=r"conv1\.weight: a nonzero weight is not one of its codebook"):
        write_dc(tmp_path / "m.dc", meta={"model": "resnet20"}, state_dict=model.state_dict(), shared=layers)


@pytest.mark.parametrize("damage", ["truncate", "flip", "magic"])
def test_a_corrupt_dc_file_is_one_line_and_exit_2(tmp_path: Path, damage: str, capsys) -> None:
    model, layers = _shared_resnet20()
    path = write_dc(tmp_path / "m.dc", meta={"model": "resnet20"}, state_dict=model.state_dict(), shared=layers)
    raw = bytearray(path.read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) - 1000]
    elif damage == "flip":
        raw[-50] ^= 0xFF
    else:
        raw[:4] = b"XXXX"
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        read_dc(path)
    assert main(["eval", "--model", str(path), "--data", "digits?size=32"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error:") and "corrupt or truncated" in err[0], err


@pytest.mark.parametrize("attack", ["huge tensor", "zlib bomb"])
def test_a_dc_header_cannot_make_the_reader_allocate_without_bound(tmp_path: Path, attack: str) -> None:
    import struct
    import zlib

    from prunegym.core.dc_format import MAGIC

    if attack == "huge tensor":  # 2^40 float32 values claimed by a few bytes of header
        head = json.dumps({"format": "prunegym.dc/1", "tensors": [{"name": "w", "shape": [1 << 20, 1 << 20]}]})
        deflated = zlib.compress(head.encode())
    else:  # 65 MiB of header from a 65 KB file
        deflated = zlib.compress(b" " * (65 * 1024 * 1024), 9)
    path = tmp_path / "evil.dc"
    path.write_bytes(MAGIC + struct.pack("<Q", len(deflated)) + deflated)
    with pytest.raises(CheckpointError, match=r"claim|inflates past"):
        read_dc(path)


def test_agp_schedule_rises_fast_then_slowly_to_the_final_sparsity() -> None:
    assert agp_sparsity(0, steps=4, final=0.8) == 0.0
    assert agp_sparsity(1, steps=4, final=0.8) == pytest.approx(0.8 * (1 - 0.75**3))  # 0.4625
    assert agp_sparsity(4, steps=4, final=0.8) == pytest.approx(0.8)


def test_magnitude_masks_global_and_per_layer() -> None:
    a, b = torch.arange(1.0, 11.0), torch.arange(1.0, 11.0) * 100
    glob = magnitude_masks({"a": a, "b": b}, sparsity=0.5, scope="global")
    assert glob["a"].sum() == 0 and glob["b"].sum() == 10  # the 10 smallest are all of a
    layer = magnitude_masks({"a": a, "b": b}, sparsity=0.3, scope="layer")
    assert layer["a"].tolist() == [0, 0, 0] + [1] * 7 and layer["b"].sum() == 7
    # sigma: thresholds proportional to each layer's std (b is a scaled by 100: both lose the same weights)
    sigma = magnitude_masks({"a": a, "b": b}, sparsity=0.5, scope="sigma")
    assert sigma["a"].tolist() == sigma["b"].tolist() == [0] * 5 + [1] * 5


def test_masks_stay_zero_through_sgd_with_momentum_and_weight_decay() -> None:
    torch.manual_seed(0)
    model = build_model("smallcnn", in_channels=1)
    masks = magnitude_masks(prunable_weights(model), sparsity=0.7)
    for name, w in prunable_weights(model).items():
        w.data.mul_(masks[name])
    keeper = MaskKeeper(model, masks)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    before = {n: w.detach().clone() for n, w in prunable_weights(model).items()}
    for _ in range(3):
        loss = nn.functional.cross_entropy(model(torch.randn(8, 1, 8, 8)), torch.randint(0, 10, (8,)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        keeper.after_step()
    for name, w in prunable_weights(model).items():
        dead = masks[name] == 0
        assert int((w[dead] != 0).sum()) == 0, name
        assert int((opt.state[w]["momentum_buffer"][dead] != 0).sum()) == 0, name
        assert not torch.equal(w[~dead], before[name][~dead]), name  # the kept weights did train


@pytest.mark.parametrize("init", ["linear", "density", "random"])
def test_sharing_leaves_at_most_2_to_the_bits_values_per_layer(init: str, digits32) -> None:
    torch.manual_seed(0)
    model = build_model("resnet20", in_channels=1)
    masks = magnitude_masks(prunable_weights(model), sparsity=0.6)
    for name, w in prunable_weights(model).items():
        w.data.mul_(masks[name])
    names = {n: 3 for n in prunable_weights(model)}
    shared = share_weights(model, names=names, init=init, seed=0)
    finetune_centroids(model, shared, digits32, steps=2, lr=1e-4, batch_size=16)
    for name, w in prunable_weights(model).items():
        values = torch.unique(w[w != 0])
        assert 2 <= len(values) <= 8, (name, len(values))
        assert torch.equal(w == 0, masks[name] == 0), name  # the pruned stay pruned, the kept stay nonzero
        assert torch.equal(w, shared[name].weight()), name


def test_compress_runs_resumes_and_its_dc_file_evaluates_through_the_cli(tmp_path: Path, capsys) -> None:
    out = tmp_path / "dc"
    argv = ["compress", "--model", "smallcnn", "--data", "digits", "--out", str(out), "--sparsity", "0.8"]
    argv += ["--prune-steps", "2", "--epochs-per-step", "1", "--max-steps-per-epoch", "3", "--centroid-steps", "3"]
    assert main([*argv, "--bits", "3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["bit_exact"] is True and report["max_distinct_values_per_layer"] <= 8
    assert abs(report["sparsity"] - 0.8) < 0.01
    assert [s["stage"].split()[0] for s in report["stages"]] == ["dense", "pruned", "shared", "shared", "Huffman"]
    assert report["stages"][-1]["bytes"] == (out / "model.dc").stat().st_size
    assert not list((out / "prune_1").glob("*.pt"))  # a finished step keeps one checkpoint: pruned_1.pt
    assert main(["eval", "--model", str(out / "model.dc"), "--data", "digits", "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["top1"] == pytest.approx(report["stages"][-1]["top1"], abs=1e-4)
    pruned = (out / "pruned_2.pt").stat().st_mtime_ns
    assert main([*argv, "--bits", "2", "--json", "--resume"]) == 0  # a new --bits redoes sharing only
    again = json.loads(capsys.readouterr().out)
    assert (out / "pruned_2.pt").stat().st_mtime_ns == pruned
    assert again["max_distinct_values_per_layer"] <= 4 and again["bits"] == 2
    assert again["steps"] == report["steps"]


def test_compress_can_distill_from_the_dense_model_and_says_so_in_its_stamps(tmp_path: Path, capsys) -> None:
    out = tmp_path / "dc"
    argv = ["compress", "--model", "smallcnn", "--data", "digits", "--out", str(out), "--sparsity", "0.7"]
    argv += ["--prune-steps", "1", "--epochs-per-step", "1", "--max-steps-per-epoch", "3", "--centroid-steps", "0"]
    assert main([*argv, "--distill", "--kd-alpha", "0.5", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    steps = json.loads((out / "steps.json").read_text())
    assert steps["prune_1"]["settings"]["distill"] is True and steps["prune_1"]["settings"]["kd_alpha"] == 0.5
    assert "teacher_precision" not in steps["prune_1"]["settings"]  # fp32: the stamps of runs made before it
    distilled = json.loads((out / "prune_1" / "metrics.jsonl").read_text().splitlines()[0])
    pruned = (out / "pruned_1.pt").stat().st_mtime_ns
    assert main([*argv, "--distill", "--kd-alpha", "0.5", "--teacher-precision", "bf16", "--resume"]) == 0
    capsys.readouterr()
    assert json.loads((out / "steps.json").read_text())["prune_1"]["settings"]["teacher_precision"] == "bf16"
    assert (out / "pruned_1.pt").stat().st_mtime_ns != pruned  # other soft targets: the step is redone
    pruned = (out / "pruned_1.pt").stat().st_mtime_ns
    assert main([*argv, "--no-distill", "--json", "--resume"]) == 0  # another finetune: the step is redone
    plain = json.loads(capsys.readouterr().out)
    assert (out / "pruned_1.pt").stat().st_mtime_ns != pruned
    assert "distill" not in json.loads((out / "steps.json").read_text())["prune_1"]["settings"]
    labels_only = json.loads((out / "prune_1" / "metrics.jsonl").read_text().splitlines()[0])
    assert distilled["train_loss"] != pytest.approx(labels_only["train_loss"], rel=1e-3)  # the teacher's term
    assert plain["bit_exact"] and report["bit_exact"]
    assert main([*argv, "--kd-alpha", "1.5"]) == 2
    assert capsys.readouterr().err.strip().startswith("error: --kd-alpha must be in [0, 1]")
