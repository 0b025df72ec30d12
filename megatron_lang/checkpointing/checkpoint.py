"""Training checkpoints: megatron-core ``dist_checkpointing`` + an atomic ``latest`` pointer.

Layout of ``CHECKPOINT_DIR``::

    iter_0000100/            one complete checkpoint (torch_dist, reshardable)
      megatron_lang.json     model metadata (architecture, padded vocab) + tokenizer/
      job.yaml               the resolved job configuration
      train_state.json       step, consumed samples, skipped steps, parallel layout
      rng/rank{r}.pt         per-rank RNG states (tensors and plain values: loaded with
                             ``weights_only=True``; restored when the layout is unchanged)
    iter_0000200.tmp/        a save in progress (or one that crashed: ignored, removed on start)
    latest                   name of the newest complete checkpoint

A save writes into ``iter_N.tmp``, and only after every rank has finished does
rank 0 rename it to ``iter_N`` and then replace ``latest`` (write-then-rename), so
a crash at any point leaves ``latest`` naming the previous complete checkpoint.
Every file is fsynced before the rename, the folder and its parent after it, and
``latest`` is written to a temporary name, fsynced and renamed over the old one:
after a power cut ``latest`` never names a folder whose files are not on disk.
The optimizer state is ``dp_reshardable`` by default (resumes at another DP size, with
the same gradient-bucket layout, which ``train_state.json`` records and a resume checks
before loading) or ``fully_reshardable`` (any TP/PP/DP); RNG states are only restored
when the layout is the same (they are per rank).

Checkpoints are trusted input: PyTorch's distributed checkpoint unpickles its
``.metadata`` file, so a checkpoint folder from elsewhere can run code when resumed.
Nothing of ours widens that: the RNG files load with ``weights_only=True``.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from megatron_lang.checkpointing import faults
from megatron_lang.platform.logging import get_logger
from megatron_lang.platform.seed import get_rng_states, set_rng_states

log = get_logger(__name__)

LATEST = "latest"
TRAIN_STATE = "train_state.json"
OPTIMIZER_FORMATS = ("dp_reshardable", "fully_reshardable")
"""megatron-core's distributed-optimizer checkpoint formats we write (see ``save_checkpoint``)."""
MODEL_PARALLEL_KEYS = (
    "tensor_parallel",
    "pipeline_parallel",
    "virtual_pipeline_parallel",
    "context_parallel",
)
"""Layout entries a ``dp_reshardable`` optimizer state cannot change across a resume."""


class CheckpointLayoutError(ValueError):
    """A checkpoint cannot be resumed with this layout (the message says what to do)."""


class CheckpointFileError(ValueError):
    """A file of a checkpoint is not what megatron_lang writes (the message names it)."""


def bucket_layout(optimizer) -> list | None:
    """Unpadded parameters per gradient bucket of the distributed optimizer, else None.

    ``[[bucket sizes of buffer 0, ...] per chained optimizer]``. megatron-core's
    ``dp_reshardable`` optimizer state is stored per bucket and loads only into the same
    bucket layout (``distrib_optimizer.load_parameter_state_from_dp_reshardable``); the
    layout depends on the model, TP/PP and ``optimizer.ddp_bucket_size``, not on DP.
    """
    chained = getattr(optimizer, "chained_optimizers", None) or [optimizer]
    out = []
    for opt in chained:
        per_buffer = getattr(opt, "per_bucket_numel_unpadded", None)
        if per_buffer is None:
            return None
        out.append([[int(n) for counts in b.values() for n in counts] for b in per_buffer])
    return out


def _pipeline_first() -> bool:
    from megatron.core import parallel_state as ps

    return not dist.is_initialized() or ps.get_pipeline_model_parallel_rank() == 0


def check_bucket_layout(path: Path, state: TrainState, current: list | None, fmt: str) -> None:
    """Refuse, on every rank and before any load, a bucket layout the state cannot load into.

    Only ``dp_reshardable`` depends on the buckets. ``train_state.json`` holds rank 0's
    layout (the first pipeline stage's); ranks of that stage compare theirs and all ranks
    agree through one all-reduce, so none is left waiting in the load.
    """
    if fmt != "dp_reshardable" or state.bucket_layout is None:
        return
    differs = current is not None and _pipeline_first() and current != state.bucket_layout
    if dist.is_initialized():
        from megatron_lang.platform.distributed import collective_tensor

        flag = collective_tensor([float(differs)])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        differs = bool(flag.item())
    if differs:
        saved_size = state.ddp_bucket_size
        raise CheckpointLayoutError(
            f"{path} holds the optimizer state in the dp_reshardable format, stored per "
            f"gradient bucket, and this run's buckets differ (saved with "
            f"optimizer.ddp_bucket_size={saved_size}: buckets {state.bucket_layout}; now "
            f"{current}). Resume with optimizer.ddp_bucket_size={saved_size}, or convert: "
            f"resume once with the settings it was saved with, adding "
            f"checkpoint.optimizer_format=fully_reshardable train.steps={state.step + 1}, then "
            "resume that checkpoint with the new settings"
        )


def _sharding(optimizer_format: str) -> dict[str, str]:
    if optimizer_format not in OPTIMIZER_FORMATS:
        raise ValueError(
            f"checkpoint.optimizer_format={optimizer_format!r}: one of {', '.join(OPTIMIZER_FORMATS)}"
        )
    return {"distrib_optim_sharding_type": optimizer_format}


def _dp_group():
    from megatron.core import parallel_state as ps

    return ps.get_data_parallel_group(with_context_parallel=True)


def _save_strategy():
    """Fully parallel save: the DP replicas of each tensor share the writing."""
    from megatron.core.dist_checkpointing.serialization import get_default_save_sharded_strategy
    from megatron.core.dist_checkpointing.strategies.fully_parallel import (
        FullyParallelSaveStrategyWrapper,
    )

    return FullyParallelSaveStrategyWrapper(get_default_save_sharded_strategy(), _dp_group())


def _load_strategy(path: Path):
    """Fully parallel load: each DP replica reads a part and the parts are exchanged."""
    from megatron.core.dist_checkpointing.serialization import get_default_load_sharded_strategy
    from megatron.core.dist_checkpointing.strategies.fully_parallel import (
        FullyParallelLoadStrategyWrapper,
    )

    return FullyParallelLoadStrategyWrapper(
        get_default_load_sharded_strategy(str(path)), _dp_group()
    )


def _normal(key: str, value: Any) -> Any:
    # a VPP of 1 (older checkpoints recorded it) is no interleaving, as None
    return None if key == "virtual_pipeline_parallel" and value == 1 else value


def check_resume_layout(path: Path, state: TrainState, current_layout: dict[str, Any]) -> str:
    """The optimizer format to load ``path`` with at ``current_layout``; log a layout change.

    ``dp_reshardable`` (the default save) reshards over data parallelism only;
    ``fully_reshardable`` over TP, PP, VPP, CP and DP.

    Raises:
        CheckpointLayoutError: a ``dp_reshardable`` checkpoint resumed with another
            TP/PP/VPP/CP (names both layouts and the way to convert it).
    """
    fmt = state.optimizer_format
    saved = {k: _normal(k, state.layout.get(k)) for k in MODEL_PARALLEL_KEYS}
    now = {k: _normal(k, current_layout.get(k)) for k in MODEL_PARALLEL_KEYS}
    if saved != now and fmt == "dp_reshardable":
        changed = ", ".join(f"{k} {saved[k]} -> {now[k]}" for k in saved if saved[k] != now[k])
        raise CheckpointLayoutError(
            f"{path} holds the optimizer state in the dp_reshardable format, which resumes at "
            f"another data-parallel size but not with another model-parallel layout ({changed}). "
            "Resume it once at the layout it was saved with, adding "
            f"checkpoint.optimizer_format=fully_reshardable train.steps={state.step + 1}, then "
            "resume that checkpoint with the new layout"
        )
    if state.layout != current_layout:
        log.info(
            "%s: saved at %s, resuming at %s (%s format, resharded on load)",
            path.name,
            state.layout,
            current_layout,
            fmt,
        )
    return fmt


DELETING = ".deleting"


def _fsync(path: Path) -> None:
    """fsync a file or a folder (the folder's entries: renames and new files in it)."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file under ``root``, then every folder (deepest first)."""
    folders = [root]
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            _fsync(Path(dirpath) / name)
        folders += [Path(dirpath) / d for d in dirnames]
    for d in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        _fsync(d)


def _step_of(path: Path) -> int | None:
    try:
        return int(path.name.split("_", 1)[1])
    except (IndexError, ValueError):
        return None


def iter_name(step: int) -> str:
    """Folder name of the checkpoint after ``step`` steps."""
    return f"iter_{step:07d}"


@dataclass
class TrainState:
    """Where the run stands; saved with every checkpoint."""

    step: int = 0
    """Optimizer steps taken (including skipped ones)."""
    consumed_samples: int = 0
    """Training samples consumed: the data position to resume from."""
    skipped_steps: int = 0
    """Steps skipped for a NaN/Inf loss so far."""
    layout: dict[str, Any] = field(default_factory=dict)
    """Parallel layout and world size that wrote the checkpoint."""
    stage: int = 0
    """Index of the training stage whose model/optimizer the checkpoint holds."""
    optimizer_format: str = "fully_reshardable"
    """Distributed-optimizer format of the saved state (older checkpoints: fully_reshardable)."""
    ddp_bucket_size: int | None = None
    """``optimizer.ddp_bucket_size`` of the run that saved it (None: older checkpoints)."""
    bucket_layout: list | None = None
    """Rank 0's unpadded parameters per gradient bucket (:func:`bucket_layout`)."""


def read_train_state(path: str | os.PathLike) -> TrainState:
    """The train state of checkpoint ``path`` (step, stage ...) without loading tensors."""
    return TrainState(**json.loads((Path(path) / TRAIN_STATE).read_text()))


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def latest_checkpoint(root: str | os.PathLike) -> Path | None:
    """The checkpoint ``root/latest`` names, or None when there is none.

    Raises:
        FileNotFoundError: ``latest`` names a folder that does not exist.
    """
    pointer = Path(root) / LATEST
    if not pointer.is_file():
        return None
    path = Path(root) / pointer.read_text().strip()
    if not (path / TRAIN_STATE).is_file():
        raise FileNotFoundError(f"{pointer} names {path.name}, which is not a complete checkpoint")
    return path


def remove_incomplete(root: str | os.PathLike) -> list[str]:
    """Delete folders left by interrupted saves (``*.tmp``) and deletions (``*.deleting``).

    Rank 0 only; returns their names.
    """
    removed = []
    if _rank() == 0 and Path(root).is_dir():
        for pattern in ("iter_*.tmp", f"iter_*{DELETING}"):
            for p in Path(root).glob(pattern):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p.name)
    _barrier()
    return removed


def _model_sharded(model_chunks: list) -> dict[str, Any]:
    if len(model_chunks) == 1:
        return {"model": model_chunks[0].sharded_state_dict()}
    sd = {}
    for i, chunk in enumerate(model_chunks):
        sd[f"model{i}"] = chunk.sharded_state_dict()
    return sd


def _unwrap(chunk):
    return getattr(chunk, "module", chunk)


def save_checkpoint(
    root: str | os.PathLike,
    state: TrainState,
    model_chunks: list,
    optimizer,
    scheduler,
    write_metadata,
    keep_last: int | None = None,
    async_queue=None,
    optimizer_format: str = "dp_reshardable",
) -> Path:
    """Save a complete checkpoint of the run at ``state.step`` (call on every rank).

    Args:
        root: checkpoint directory.
        state: step, data position, skipped steps, layout.
        model_chunks: the (DDP-wrapped) model chunks of this rank.
        optimizer: the megatron-core optimizer.
        scheduler: megatron-core's ``OptimizerParamScheduler``.
        write_metadata: ``f(tmp_dir)`` run on rank 0 to write metadata/config files.
        keep_last: delete older checkpoints beyond this many.
        async_queue: megatron-core ``AsyncCallsQueue``: write in the background; the
            checkpoint is renamed and ``latest`` moves when the queue finalizes it.
        optimizer_format: ``dp_reshardable`` (each rank writes its own optimizer shard, no
            gather; resumes at another DP size) or ``fully_reshardable`` (gathered per
            parameter in host memory; resumes at any TP/PP/VPP/CP/DP). Either way the
            model weights' DP replicas share the writing (fully parallel save).

    Returns:
        The final checkpoint folder (complete once finalized, for async saves).
    """
    from megatron.core import dist_checkpointing

    root = Path(root)
    final = root / iter_name(state.step)
    tmp = root / (final.name + ".tmp")
    if _rank() == 0:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    _barrier()
    sharded = _model_sharded([_unwrap(c) for c in model_chunks])
    sharding = _sharding(optimizer_format)
    state.optimizer_format = optimizer_format
    state.bucket_layout = bucket_layout(optimizer)
    sharded["optimizer"] = optimizer.sharded_state_dict(sharded, metadata=sharding)
    sharded["scheduler"] = scheduler.state_dict()
    sharded["step"] = state.step
    request = dist_checkpointing.save(
        sharded,
        str(tmp),
        sharded_strategy=_save_strategy(),
        async_sharded_save=async_queue is not None,
    )
    (tmp / "rng").mkdir(exist_ok=True)
    rng_file = tmp / "rng" / f"rank{_rank()}.pt"
    torch.save(get_rng_states(), rng_file)  # tensors and plain values only
    _fsync(rng_file)
    if _rank() == 0:
        write_metadata(tmp)
        (tmp / TRAIN_STATE).write_text(json.dumps(state.__dict__, indent=2))

    def finalize() -> None:
        faults.maybe_kill("save-written", state.step, _rank())
        _barrier()
        if _rank() == 0:
            _publish(root, tmp, final, keep_last, state.step)
        _barrier()

    if request is None:
        finalize()
    else:
        request.add_finalize_fn(finalize)
        async_queue.schedule_async_request(request)
        log.info("checkpoint %s is being written in the background", final.name)
    return final


def _publish(root: Path, tmp: Path, final: Path, keep_last: int | None, step: int) -> None:
    """Rename a finished save into place, then move ``latest`` to it (rank 0).

    Files and folders are fsynced first, so ``latest`` never names data that is not on
    disk yet; ``keep_last`` then prunes (see :func:`prune`).
    """
    fsync_tree(tmp)
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    _fsync(root)
    faults.maybe_kill("save-renamed", step, 0)
    pointer_tmp = root / (LATEST + ".tmp")
    with open(pointer_tmp, "w") as f:
        f.write(final.name + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(pointer_tmp, root / LATEST)
    _fsync(root)
    log.info("saved checkpoint %s", final)
    faults.maybe_kill("save-published", step, 0)
    if keep_last is not None:
        prune(root, final, keep_last)


def prune(root: Path, newest: Path, keep_last: int) -> list[str]:
    """Keep ``newest`` and the ``keep_last - 1`` complete checkpoints before it; delete older.

    Only checkpoints of earlier steps than ``newest`` are candidates: folders of later
    steps (left by an earlier run in the same directory) are never deleted for the
    new one, and the checkpoint just saved never is. A folder is renamed to
    ``iter_N.deleting`` before it is removed, so an interrupted deletion leaves a
    name that the next start cleans up (:func:`remove_incomplete`), not a
    half-deleted ``iter_N``.

    Raises:
        ValueError: ``keep_last`` < 1.
    """
    if keep_last < 1:
        raise ValueError(f"checkpoint.keep_last={keep_last}: keep at least 1 (null keeps all)")
    limit = _step_of(newest)
    older = sorted(
        (p for p in root.glob("iter_*") if p.is_dir() and p.suffix == "" and p != newest),
        key=lambda p: _step_of(p) or 0,
    )
    older = [p for p in older if (_step_of(p) or 0) < limit]
    removed = []
    for old in older[: max(0, len(older) - (keep_last - 1))]:
        doomed = old.with_name(old.name + DELETING)
        old.rename(doomed)
        shutil.rmtree(doomed, ignore_errors=True)
        removed.append(old.name)
    return removed


def _torch_adam_compat(optimizer) -> None:
    """Let megatron-core's distributed optimizer load into ``torch.optim.Adam``.

    Without Apex/TransformerEngine, megatron-core 0.16.1 wraps ``torch.optim.Adam``
    and two things break on load: a fresh Adam has no state, but building the
    state dict to load into reads every parameter's ``step``; and the fully
    reshardable format stores ``step`` in the param groups, not per parameter, yet
    the per-parameter copy expects it there. Here a fresh Adam gets zero state
    (overwritten by the load) and the per-parameter copy skips ``step`` (restored
    from the param groups by megatron-core). GPUs with TE/Apex never need this.
    """
    for opt in getattr(optimizer, "chained_optimizers", [optimizer]):
        torch_opt = getattr(opt, "optimizer", None)
        if not isinstance(torch_opt, torch.optim.Adam | torch.optim.AdamW):
            continue
        for group in torch_opt.param_groups:
            for p in group["params"]:
                if not torch_opt.state[p]:
                    torch_opt.state[p] = {
                        "step": torch.tensor(0.0),
                        "exp_avg": torch.zeros_like(p),
                        "exp_avg_sq": torch.zeros_like(p),
                    }
        if hasattr(opt, "_set_main_param_and_optimizer_states") and not hasattr(
            opt, "_mlang_compat"
        ):
            original = opt._set_main_param_and_optimizer_states

            def set_states(model_param, tensors, _opt=opt, _original=original):
                # `step` comes from the param groups (both formats); a per-parameter
                # `step` in `tensors` is the fresh optimizer's own 0 (dp_reshardable
                # keeps it as a local non-persistent object) and must not be copied in
                tensors = {k: v for k, v in tensors.items() if k != "step"}
                group_index, group_order = _opt.model_param_group_index_map[model_param]
                main = _opt.optimizer.param_groups[group_index]["params"][group_order]
                step = _opt.optimizer.state[main].pop("step", None)
                try:
                    with torch.no_grad():  # dp_reshardable's load is not under no_grad
                        return _original(model_param, tensors)
                finally:
                    if step is not None:
                        _opt.optimizer.state[main]["step"] = step

            opt._set_main_param_and_optimizer_states = set_states
            opt._mlang_compat = True


def _untie_adam_steps(optimizer) -> None:
    """After a load, give each parameter its own ``step`` tensor.

    megatron-core's load assigns one shared ``step`` tensor to every parameter of a
    ``torch.optim.Adam``; Adam increments each parameter's step in place, so a
    shared tensor would advance once per parameter per step and corrupt the bias
    correction of every step after a resume.
    """
    for opt in getattr(optimizer, "chained_optimizers", [optimizer]):
        torch_opt = getattr(opt, "optimizer", None)
        if isinstance(torch_opt, torch.optim.Adam | torch.optim.AdamW):
            for state in torch_opt.state.values():
                if isinstance(state.get("step"), torch.Tensor):
                    state["step"] = state["step"].clone()


def load_checkpoint(
    path: str | os.PathLike,
    model_chunks: list,
    optimizer,
    scheduler,
    current_layout: dict[str, Any],
) -> TrainState:
    """Resume model, optimizer, scheduler (and RNG when the layout matches) from ``path``."""
    from megatron.core import dist_checkpointing

    path = Path(path)
    state = read_train_state(path)
    fmt = check_resume_layout(path, state, current_layout)
    check_bucket_layout(path, state, bucket_layout(optimizer), fmt)
    rng_file = path / "rng" / f"rank{_rank()}.pt"
    same_layout = state.layout == current_layout
    rng = read_rng_file(rng_file) if same_layout and rng_file.is_file() else None
    chunks = [_unwrap(c) for c in model_chunks]
    sharded = _model_sharded(chunks)
    _torch_adam_compat(optimizer)
    sharded["optimizer"] = optimizer.sharded_state_dict(
        sharded, is_loading=True, metadata=_sharding(fmt)
    )
    sharded["scheduler"] = scheduler.state_dict()
    sharded["step"] = 0
    try:
        loaded = dist_checkpointing.load(sharded, str(path), sharded_strategy=_load_strategy(path))
    except Exception as e:
        if fmt == "dp_reshardable" and state.bucket_layout is None and "shape mismatch" in str(e):
            raise CheckpointLayoutError(
                f"{path} (written before megatron_lang recorded gradient buckets) holds its "
                "dp_reshardable optimizer state in another bucket layout than this run's: "
                "megatron-core sized the buckets by the DP size, and used one bucket without "
                "optimizer.overlap_grad_reduce. Resume it once at the DP size and "
                "overlap_grad_reduce it was saved with, adding "
                f"checkpoint.optimizer_format=fully_reshardable train.steps={state.step + 1}, "
                f"then resume that checkpoint here ({e})"
            ) from e
        raise
    if len(chunks) == 1:
        chunks[0].load_state_dict(loaded["model"])
    else:
        for i, chunk in enumerate(chunks):
            chunk.load_state_dict(loaded[f"model{i}"])
    optimizer.load_state_dict(loaded["optimizer"])
    _untie_adam_steps(optimizer)
    scheduler.load_state_dict(loaded["scheduler"])
    if rng is not None:
        set_rng_states(rng)
    else:
        log.warning(
            "resuming %s with a different layout (%s -> %s): RNG states start fresh",
            path.name,
            state.layout,
            current_layout,
        )
    log.info("resumed from %s at step %d", path, state.step)
    return state


def read_rng_file(path: Path) -> dict[str, Any]:
    """The RNG states saved in ``path``, read with ``weights_only=True`` (no code runs).

    Raises:
        CheckpointFileError: the file holds anything but tensors and plain values (a
            crafted file, or one written by megatron_lang before RNG states were kept
            pickle-free), naming the file and how to resume without it.
    """
    import pickle

    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
        raise CheckpointFileError(
            f"{path}: not a plain tensor file, refused without unpickling it ({e}). "
            "megatron_lang writes RNG states as tensors and plain values only; a file that "
            "needs more may run code. If the checkpoint is yours and older, delete its rng/ "
            "folder: the run then resumes with fresh RNG states"
        ) from None


def load_model_weights(path: str | os.PathLike, model_chunks: list, adapters: bool = False) -> None:
    """Load only the model weights of a checkpoint (a converted HF model or a training save).

    ``_extra_state`` entries (TransformerEngine FP8 metadata) are not required:
    converted checkpoints have none, and a fresh FP8 run starts its own history.
    LoRA adapters (``*_lora.lora_A/B``) are loaded only with ``adapters``; otherwise
    the model's adapters keep their initial values (a base model to adapt).

    Raises:
        RuntimeError: a weight of the model is missing from the checkpoint.
    """
    from megatron.core import dist_checkpointing

    chunks = [_unwrap(c) for c in model_chunks]
    sharded = _model_sharded(chunks)
    for key, part in sharded.items():
        sharded[key] = {k: v for k, v in part.items() if not _optional_key(k, adapters)}
    loaded = dist_checkpointing.load(sharded, str(path))
    for i, chunk in enumerate(chunks):
        state = loaded["model"] if len(chunks) == 1 else loaded[f"model{i}"]
        missing, unexpected = chunk.load_state_dict(state, strict=False)
        missing = [k for k in missing if not _optional_key(k, adapters)]
        if missing or unexpected:
            raise RuntimeError(
                f"loading weights from {path}: missing {missing}, unexpected {unexpected}"
            )
    log.info("loaded model weights from %s", path)


def _optional_key(key: str, adapters: bool) -> bool:
    if key.endswith("_extra_state"):
        return True
    return not adapters and key.endswith(("_lora.lora_A", "_lora.lora_B"))


def save_model_weights(path: str | os.PathLike, model_chunks: list, write_metadata) -> Path:
    """Save only the model weights (a start point like a converted HF model); every rank calls.

    Written to ``path.tmp`` and renamed when complete.
    """
    from megatron.core import dist_checkpointing

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if _rank() == 0:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    _barrier()
    dist_checkpointing.save(_model_sharded([_unwrap(c) for c in model_chunks]), str(tmp))
    _barrier()
    if _rank() == 0:
        write_metadata(tmp)
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
    _barrier()
    return path
