"""Search checkpoints without pickles: tensors via ``torch.save``, replay buffer via ``np.savez``, the rest JSON.

stable-baselines3's ``model.save``/``load`` zip stores cloudpickled objects, and loading it unpickles from a user
path; the house rule forbids that. A checkpoint here is a folder ``checkpoints/<name>/`` holding

- ``agent.pt``: ``{"params": model.get_parameters(), "tensors": {...}}`` (policy and optimizer state dicts, plus
  SB3's bare tensors such as SAC's ``log_ent_coef``), read back with ``torch.load(weights_only=True)``;
- ``replay_buffer.npz``: the replay arrays (off-policy agents), read back with ``allow_pickle=False``;
- ``state.json``: counters (``num_timesteps``, episodes, updates), the buffer's position and reward baseline, and
  every RNG state (Python, NumPy global, PyTorch, the action space's and the exploration generators) as plain lists.

``checkpoints/latest.json`` names the newest complete folder and is replaced atomically after the folder is
written, so an interrupted checkpoint leaves the previous one in force.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import uuid
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.save_util import recursive_getattr

from prunegym.agents.buffer import buffer_state, load_buffer_arrays, load_buffer_state, save_buffer_arrays
from prunegym.core.errors import CheckpointError
from prunegym.core.io import atomic_torch_save, atomic_write_text

__all__ = [
    "CHECKPOINTS_DIR",
    "CHECKPOINT_FORMAT",
    "SearchCheckpoint",
    "agent_state",
    "capture_global_rng",
    "read_latest_checkpoint",
    "restore_agent",
    "restore_global_rng",
    "write_checkpoint",
]

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "prunegym.search-checkpoint/1"
CHECKPOINTS_DIR = "checkpoints"
LATEST_FILE = "latest.json"
AGENT_FILE = "agent.pt"
BUFFER_FILE = "replay_buffer.npz"
STATE_FILE = "state.json"


@dataclass(frozen=True)
class SearchCheckpoint:
    """A checkpoint folder and its ``state.json``.

    Args:
        path: the checkpoint folder.
        episodes_done: episodes finished (and trained on) when it was written.
        state: the decoded ``state.json``.
    """

    path: Path
    episodes_done: int
    state: Mapping[str, Any]


# ---------------------------------------------------------------------------------------------- RNG states


def capture_global_rng() -> dict[str, Any]:
    """Python, NumPy (legacy global) and PyTorch RNG states as JSON-safe lists."""
    py_version, py_state, py_gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    state: dict[str, Any] = {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": th.get_rng_state().tolist(),
    }
    if th.cuda.is_available() and th.cuda.is_initialized():
        state["torch_cuda"] = [s.tolist() for s in th.cuda.get_rng_state_all()]
    return state


def restore_global_rng(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_global_rng`."""
    py_version, py_state, py_gauss = state["python"]
    random.setstate((py_version, tuple(py_state), py_gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss), float(cached)))
    th.set_rng_state(th.tensor(state["torch"], dtype=th.uint8))
    if "torch_cuda" in state and th.cuda.is_available():
        th.cuda.set_rng_state_all([th.tensor(s, dtype=th.uint8) for s in state["torch_cuda"]])


# ---------------------------------------------------------------------------------------------- agent state


def agent_state(model: BaseAlgorithm) -> dict[str, Any]:
    """JSON-safe counters and RNG states of ``model`` (its tensors go to ``agent.pt``)."""
    state: dict[str, Any] = {
        "algorithm": type(model).__name__,
        "num_timesteps": int(model.num_timesteps),
        "episode_num": int(model._episode_num),
        "n_updates": int(getattr(model, "_n_updates", 0)),
        "action_space_rng": model.action_space.np_random.bit_generator.state,
    }
    if hasattr(model, "episodes_done"):
        state["episodes_done"] = int(model.episodes_done)
    noise_rng = getattr(model, "noise_rng", None)
    if isinstance(noise_rng, np.random.Generator):
        state["noise_rng"] = noise_rng.bit_generator.state
    if isinstance(model, OffPolicyAlgorithm) and model.replay_buffer is not None:
        state["replay_buffer"] = buffer_state(model.replay_buffer)
    return state


def _torch_payload(model: BaseAlgorithm) -> dict[str, Any]:
    _, tensor_names = model._get_torch_save_params()
    tensors = {name: recursive_getattr(model, name).detach().cpu().clone() for name in tensor_names}
    return {"params": model.get_parameters(), "tensors": tensors}


def write_checkpoint(
    run_dir: Path,
    *,
    episodes_done: int,
    state: Mapping[str, Any],
    model: BaseAlgorithm | None = None,
) -> Path:
    """Write a checkpoint folder for ``episodes_done`` episodes, then point ``latest.json`` at it.

    Args:
        run_dir: the run folder.
        episodes_done: episodes finished when the checkpoint is taken.
        state: JSON-safe search state (config, best reward, ...); the agent's own state is added.
        model: the agent, or ``None`` (random search)

    Returns:
        The checkpoint folder.
    """
    root = Path(run_dir) / CHECKPOINTS_DIR
    name = f"ep{episodes_done:06d}-{uuid.uuid4().hex[:8]}"
    folder = root / name
    folder.mkdir(parents=True)
    full: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "episodes_done": int(episodes_done),
        **state,
        "rng": capture_global_rng(),
    }
    if model is not None:
        full["agent"] = agent_state(model)
        atomic_torch_save(folder / AGENT_FILE, _torch_payload(model))
        if isinstance(model, OffPolicyAlgorithm) and model.replay_buffer is not None:
            save_buffer_arrays(model.replay_buffer, folder / BUFFER_FILE)
    atomic_write_text(folder / STATE_FILE, json.dumps(full))
    atomic_write_text(root / LATEST_FILE, json.dumps({"folder": name, "episodes_done": int(episodes_done)}) + "\n")
    for old in root.iterdir():
        if old.is_dir() and old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    log.info("checkpoint after %d episodes: %s", episodes_done, folder)
    return folder


def read_latest_checkpoint(run_dir: Path) -> SearchCheckpoint | None:
    """The checkpoint ``latest.json`` names, or ``None`` when the run has none yet."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    latest = root / LATEST_FILE
    if not latest.exists():
        return None
    restart = f"delete {root} to restart the search from scratch"
    try:
        pointer = json.loads(latest.read_text(encoding="utf-8"))
        name = pointer["folder"] if isinstance(pointer, dict) else None
        # a path read from a run file stays inside the run: one plain child of checkpoints/
        if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
            raise CheckpointError(f"{latest} names folder {name!r}, not a folder of {root}; {restart}")
        folder = root / name
        state = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, KeyError, TypeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read the search checkpoint in {root}: {exc}; {restart}") from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{folder / STATE_FILE} is not a {CHECKPOINT_FORMAT} checkpoint; start a new run folder")
    try:
        episodes = int(state["episodes_done"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{folder / STATE_FILE} has no valid episodes_done ({exc}); {restart}") from exc
    return SearchCheckpoint(path=folder, episodes_done=episodes, state=state)


def restore_agent(model: BaseAlgorithm, checkpoint: SearchCheckpoint) -> None:
    """Load weights, optimizers, replay buffer, counters and RNG states of ``checkpoint`` into ``model``.

    ``model`` must be built with the same agent settings and env as the checkpointed one.
    """
    saved = checkpoint.state.get("agent")
    if saved is None:
        raise CheckpointError(f"{checkpoint.path} holds no agent state; it was written by random search")
    if saved["algorithm"] != type(model).__name__:
        raise CheckpointError(
            f"{checkpoint.path} holds a {saved['algorithm']} agent, not a {type(model).__name__}; "
            "resume with the same --agent"
        )
    restart = f"delete {checkpoint.path.parent} to restart the search from scratch"
    path = checkpoint.path / AGENT_FILE
    try:
        payload = th.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a corrupt or foreign file; quote its first line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise CheckpointError(f"cannot read {path}: {first}; {restart}") from exc
    _, expected = model._get_torch_save_params()
    if not isinstance(payload, dict) or not isinstance(payload.get("params"), dict):
        raise CheckpointError(f"{path} is not an agent checkpoint written by prunegym; {restart}")
    tensors = payload.get("tensors") or {}
    foreign = sorted(set(tensors) - set(expected)) if isinstance(tensors, dict) else ["?"]
    if foreign:  # names from a file address only the tensors SB3 itself saves
        raise CheckpointError(f"{path} holds tensor(s) {', '.join(map(str, foreign))} this agent lacks; {restart}")
    try:
        model.set_parameters(payload["params"], exact_match=True, device=model.device)
        for name, tensor in tensors.items():
            recursive_getattr(model, name).data.copy_(tensor)
        if "replay_buffer" in saved:
            assert isinstance(model, OffPolicyAlgorithm) and model.replay_buffer is not None
            load_buffer_arrays(model.replay_buffer, checkpoint.path / BUFFER_FILE)
            load_buffer_state(model.replay_buffer, saved["replay_buffer"])
    except (ValueError, KeyError, TypeError, RuntimeError, OSError, EOFError, zipfile.BadZipFile) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise CheckpointError(f"cannot restore the agent from {checkpoint.path}: {first}; {restart}") from exc
    model.num_timesteps = int(saved["num_timesteps"])
    model._episode_num = int(saved["episode_num"])
    if hasattr(model, "_n_updates"):
        model._n_updates = int(saved["n_updates"])
    if "episodes_done" in saved:
        model.episodes_done = int(saved["episodes_done"])  # type: ignore[attr-defined]
    if "noise_rng" in saved:
        model.noise_rng.bit_generator.state = saved["noise_rng"]  # type: ignore[attr-defined]
    model.action_space.np_random.bit_generator.state = saved["action_space_rng"]
    restore_global_rng(checkpoint.state["rng"])
