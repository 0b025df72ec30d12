"""Everything the loop needs, built from a :class:`~megatron_lang.config.JobConfig`.

Model chunks (one per virtual pipeline stage), DDP wrapping, the megatron-core
optimizer and LR scheduler — plus the start-up checks that reject options this
machine cannot run, with a message naming the option.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from megatron_lang.config import JobConfig, get_preset
from megatron_lang.models.arch import LlamaArch, padded_vocab_size, to_transformer_config
from megatron_lang.models.gpt import (
    build_gpt_model,
    describe_layer_spec,
    gpu_fusions,
    transformer_engine_available,
)
from megatron_lang.platform.logging import get_logger

log = get_logger(__name__)

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


class StartupError(ValueError):
    """A configuration that cannot run on this machine or with this model."""


@dataclass
class ModelSource:
    """The architecture to build and where its weights come from."""

    arch: LlamaArch
    """Model shape."""
    padded_vocab: int
    """Embedding rows (the checkpoint's, or padded from the tokenizer's size)."""
    checkpoint: str | None
    """Converted checkpoint to load weights from (None: random init)."""
    hf_config: dict[str, Any]
    """Original HF config (from the checkpoint), carried into saved checkpoints."""
    tokenizer_dir: str | None
    """Tokenizer files to copy into saved checkpoints."""
    generation_config: dict[str, Any] | None = None
    """The source checkpoint's HF ``generation_config.json`` (carried into saved ones)."""


def resolve_model(cfg: JobConfig) -> ModelSource:
    """Architecture from the converted checkpoint's metadata, else from the preset."""
    from megatron_lang.checkpointing.metadata import load_metadata, tokenizer_path

    m = cfg.model
    if m.checkpoint:
        meta = load_metadata(m.checkpoint)
        arch = meta.arch
        if m.arch:
            unknown = set(m.arch) - set(LlamaArch.__dataclass_fields__)
            if unknown:
                raise StartupError(f"unknown model.arch keys {sorted(unknown)}")
            for k, v in m.arch.items():
                if getattr(arch, k) != v:
                    raise StartupError(
                        f"model.arch.{k}={v!r} conflicts with checkpoint {m.checkpoint} "
                        f"({k}={getattr(arch, k)!r}); a checkpoint's shape cannot be changed"
                    )
        tok = tokenizer_path(m.checkpoint)
        return ModelSource(
            arch,
            meta.padded_vocab_size,
            m.checkpoint,
            meta.hf_config,
            cfg.data.tokenizer or (str(tok) if tok else None),
            meta.generation_config,
        )
    if not m.preset:
        raise StartupError("set model.checkpoint (a converted model) or model.preset")
    try:
        arch = get_preset(m.preset, **m.arch)
    except KeyError as e:
        raise StartupError(str(e.args[0])) from None
    padded = padded_vocab_size(
        arch.vocab_size, m.make_vocab_size_divisible_by, cfg.parallel.tensor_parallel
    )
    return ModelSource(arch, padded, None, {}, cfg.data.tokenizer)


def needs_arbitrary_mask(cfg: JobConfig) -> bool:
    """Whether the job feeds explicit per-sample attention masks to the model.

    True for the hybrid MNTP and bidirectional objectives, for
    ``data.document_attention`` and for chat data (a segment per conversation); such models get megatron-core's local core
    attention (also inside the TransformerEngine spec, see ``models.gpt.layer_spec``).
    """
    return cfg.objective.enabled or cfg.data.document_attention or bool(cfg.data.chat)


def packed_attention(cfg: JobConfig) -> bool:
    """Whether the job's non-causal samples come packed (segments) rather than with dense masks."""
    return needs_arbitrary_mask(cfg) and cfg.model.attention == "packed"


def check_startup(
    cfg: JobConfig,
    arch: LlamaArch,
    world_size: int,
    hardware: bool = True,
    assume_cuda_te: bool = False,
) -> dict[str, int]:
    """Validate layout, batch arithmetic, option values and (``hardware``) this machine.

    A dry run on a login node passes ``hardware=False``: the layout is checked
    there, the GPU-only options on the compute nodes at start. With
    ``assume_cuda_te`` as well, the machine checks run as if on a CUDA node with
    TransformerEngine (the H100 target): option conflicts such as FP8 with
    ``model.transformer_engine=false`` or LoRA with the TE spec fail in the dry run.
    Whether Apex is installed is unknown then, so that check is left to the start.

    Returns:
        ``{"dp": ..., "grad_accum": ...}``.

    Raises:
        StartupError / ParallelConfigError: naming the values and the rule.
    """
    from megatron_lang.platform.parallel import validate_layout

    p, d, m = cfg.parallel, cfg.data, cfg.model
    validate_layout(
        p,
        world_size,
        arch.num_layers,
        arch.num_attention_heads,
        arch.num_query_groups,
        d.seq_length,
    )
    dp = p.data_parallel_size(world_size)
    if d.global_batch_size % (d.micro_batch_size * dp):
        raise StartupError(
            f"data.global_batch_size={d.global_batch_size} is not divisible by "
            f"micro_batch_size x DP = {d.micro_batch_size} x {dp}"
        )
    if m.dtype not in DTYPES:
        raise StartupError(f"model.dtype={m.dtype!r}: choose one of {sorted(DTYPES)}")
    if m.fp8 is not None and m.fp8 not in ("hybrid", "e4m3"):
        raise StartupError(f"model.fp8={m.fp8!r}: choose 'hybrid' or 'e4m3' (or null)")
    if m.fp8 is not None and m.fp8_recipe not in ("delayed", "tensorwise"):
        raise StartupError(f"model.fp8_recipe={m.fp8_recipe!r}: 'delayed' or 'tensorwise'")
    opt = cfg.optimizer
    if opt.overlap_param_gather and not opt.use_distributed_optimizer:
        raise StartupError("optimizer.overlap_param_gather needs use_distributed_optimizer=true")
    if opt.schedule not in ("cosine", "linear", "constant", "wsd"):
        raise StartupError(f"optimizer.schedule={opt.schedule!r}: cosine, linear, constant or wsd")
    if m.recompute not in (None, "selective", "full"):
        raise StartupError(f"model.recompute={m.recompute!r}: null, 'selective' or 'full'")
    from megatron_lang.training.stages import StageError, resolve_stages

    try:
        for st in resolve_stages(cfg):
            if st.cfg.optimizer.schedule not in ("cosine", "linear", "constant", "wsd"):
                raise StageError(
                    f"stages.{st.index}.optimizer.schedule={st.cfg.optimizer.schedule!r}: "
                    "cosine, linear, constant or wsd"
                )
    except StageError as e:
        raise StartupError(str(e)) from None
    _check_objective(cfg)
    _check_chat(cfg, need_data=hardware)
    fmt = cfg.checkpoint.optimizer_format
    if fmt not in ("dp_reshardable", "fully_reshardable"):
        raise StartupError(
            f"checkpoint.optimizer_format={fmt!r}: dp_reshardable or fully_reshardable"
        )
    keep = cfg.checkpoint.keep_last
    if keep is not None and keep < 1:
        raise StartupError(f"checkpoint.keep_last={keep}: keep at least 1 (null keeps all)")
    if m.attention not in ("packed", "dense"):
        raise StartupError(f"model.attention={m.attention!r}: 'packed' or 'dense'")
    if needs_arbitrary_mask(cfg) and p.context_parallel > 1:
        raise StartupError(
            f"parallel.context_parallel={p.context_parallel} with per-document or MNTP "
            "attention (objective.mntp_fraction/objective.bidirectional/data.document_"
            "attention): packed batches are not split across context-parallel ranks here "
            "(TE's THD partitioning is not wired up) and the dense reference has no context "
            "parallelism; set parallel.context_parallel=1"
        )
    if needs_arbitrary_mask(cfg) and arch.sliding_window and d.seq_length > arch.sliding_window:
        raise StartupError(
            f"data.seq_length={d.seq_length} is longer than the model's sliding window "
            f"({arch.sliding_window}, Mistral-7B v0.1) and the job uses an explicit attention "
            "mask (objective.mntp_fraction/objective.bidirectional/data.document_attention): "
            "megatron-core's softmax replaces an explicit mask with its own sliding-window causal "
            "mask, so MNTP samples would silently become causal and document boundaries vanish, "
            "and the packed attention applies no window; "
            f"use data.seq_length <= {arch.sliding_window} (where the window changes nothing) or "
            "a model without a sliding window (Mistral-7B v0.3, Nemo)"
        )
    if not hardware and assume_cuda_te:
        cuda, te = True, True
    elif hardware:
        cuda, te = torch.cuda.is_available(), transformer_engine_available()
    else:
        cuda = te = None
    _check_lora(cfg, arch, te)
    info = {"dp": dp, "grad_accum": d.global_batch_size // (d.micro_batch_size * dp)}
    if te is None:
        return info
    use_te = te if m.transformer_engine is None else m.transformer_engine
    if m.fp8 is not None:
        if not (cuda and te):
            raise StartupError(
                f"model.fp8={m.fp8!r} needs a CUDA GPU with TransformerEngine "
                f"(CUDA available: {cuda}, TransformerEngine usable: {te})"
            )
        if not use_te:
            raise StartupError(
                f"model.fp8={m.fp8!r} needs the TransformerEngine layer spec, but "
                "model.transformer_engine=false"
            )
    if m.transformer_engine and not te:
        raise StartupError("model.transformer_engine=true but TransformerEngine/CUDA is not usable")
    if p.context_parallel > 1 and not use_te:
        raise StartupError(
            f"parallel.context_parallel={p.context_parallel} needs TransformerEngine attention "
            "on GPUs; megatron-core's local attention has no context parallelism"
        )
    # Apex is unknown in an assumed-CUDA dry run: left to the start on the GPU node.
    if p.sequence_parallel and not use_te and hardware and not _apex_available():
        raise StartupError(
            "parallel.sequence_parallel needs TransformerEngine or Apex norms on GPUs; "
            "megatron-core's torch norm has no sequence parallelism"
        )
    # Explicit attention masks (MNTP objectives, document attention) work with the TE
    # spec too: its layers then get megatron-core's local DotProductAttention (models/gpt.py).
    return info


def layer_spec_summary(cfg: JobConfig, te: bool) -> str:
    """The layer spec a job gets on a machine where TransformerEngine is (not) usable."""
    m = cfg.model
    use_te = te if m.transformer_engine is None else bool(m.transformer_engine)
    return describe_layer_spec(use_te, needs_arbitrary_mask(cfg), packed_attention(cfg))


def _check_objective(cfg: JobConfig) -> None:
    """Value checks of the ``objective`` section (see docs/training.md, "Objectives")."""
    o = cfg.objective
    if not 0.0 <= o.mntp_fraction <= 1.0:
        raise StartupError(f"objective.mntp_fraction={o.mntp_fraction}: choose a value in [0, 1]")
    if o.bidirectional and o.mntp_fraction not in (0.0, 1.0):
        raise StartupError(
            f"objective.bidirectional=true trains every sequence with MNTP, but "
            f"objective.mntp_fraction={o.mntp_fraction}; leave it at 0 (or 1), or set "
            "bidirectional=false for a hybrid run"
        )
    if not 1 <= o.mask_span_min <= o.mask_span_max:
        raise StartupError(
            f"objective.mask_span_min={o.mask_span_min}, mask_span_max={o.mask_span_max}: "
            "need 1 <= mask_span_min <= mask_span_max"
        )
    if not 0.0 < o.mask_ratio < 1.0:
        raise StartupError(f"objective.mask_ratio={o.mask_ratio}: choose a value in (0, 1)")
    probs = (o.mask_token_prob, o.random_token_prob)
    if min(probs) < 0 or sum(probs) > 1.0 + 1e-9:
        raise StartupError(
            f"objective.mask_token_prob={o.mask_token_prob} + random_token_prob="
            f"{o.random_token_prob}: both >= 0 and at most 1 together"
        )


def _check_chat(cfg: JobConfig, need_data: bool = True) -> None:
    """Instruction tuning on chat data: the folders, what combines with them, the run length.

    With ``train.epochs`` this sets ``train.steps`` from the number of packed samples. A
    dry run (``need_data=False``) on a machine without the folders checks the rest and
    keeps ``train.steps``.
    """
    import math

    from megatron_lang.data.chat.dataset import ChatDataError, read_report

    d, t = cfg.data, cfg.train
    if not d.chat:
        if d.chat_valid:
            raise StartupError("data.chat_valid is set without data.chat")
        if t.epochs is not None:
            raise StartupError(
                "train.epochs counts passes over chat data (data.chat); a blend's run "
                "length is train.steps"
            )
        return
    if d.blend:
        raise StartupError("data.chat and data.blend are both set: a job trains on one of them")
    if cfg.objective.enabled:
        raise StartupError(
            "objective.mntp_fraction/objective.bidirectional do not apply to chat data "
            "(data.chat): instruction tuning is causal on the answer tokens"
        )
    reports = {}
    for key in ("chat", "chat_valid"):
        folder = getattr(d, key)
        if not folder or (not need_data and not Path(folder).exists()):
            continue
        try:
            reports[key] = read_report(folder)
        except ChatDataError as e:
            raise StartupError(f"data.{key}: {e}") from None
        packed_at = int(reports[key]["packing"]["seq_length"])
        if packed_at > d.seq_length:
            raise StartupError(
                f"data.{key}={folder} was packed into samples of up to {packed_at} tokens, "
                f"more than data.seq_length={d.seq_length}: rebuild it with "
                f"tools/preprocess/preprocess_chat.py --seq-length {d.seq_length}"
            )
    if t.epochs is not None:
        if t.epochs <= 0:
            raise StartupError(f"train.epochs={t.epochs}: must be positive")
        if "chat" not in reports:
            return
        samples = int(reports["chat"]["packing"]["samples"])
        t.steps = max(1, math.ceil(t.epochs * samples / d.global_batch_size))


def _apex_available() -> bool:
    try:
        import apex  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


def _check_lora(cfg: JobConfig, arch: LlamaArch, te: bool | None) -> None:
    """The ``lora`` section against the model and the layer spec the machine would use.

    ``te``: TransformerEngine is usable on the machine checked for (None: unknown,
    a plain dry run; an ``auto`` spec then counts as local).
    """
    from megatron_lang.training.lora import LoraError, check_config

    forced = cfg.model.transformer_engine
    use_te = bool(te) if forced is None else forced
    try:
        check_config(cfg, use_te, arch.tie_word_embeddings)
    except LoraError as e:
        raise StartupError(str(e)) from None


def pipeline_comm_options(layout, cuda: bool) -> dict[str, bool]:
    """TransformerConfig pipeline options Megatron-LM's training uses (empty at PP=1).

    - ``deallocate_pipeline_outputs``: once a stage has sent its output activation to
      the next stage, only the tensor's autograd graph is needed (megatron-core's
      ``custom_backward``), so its data is freed: one ``[s/TP, b, h]`` tensor per
      micro-batch in flight. Also on CPU/gloo, where the pipeline tests run it.
    - With virtual pipeline stages on CUDA, ``overlap_p2p_comm`` (the interleaved
      schedule posts the next send/receive before computing and waits later) with
      ``batch_p2p_comm=False``, which megatron-core requires with it. The 1F1B
      schedule without VPP refuses ``overlap_p2p_comm``. Not on gloo: there
      ``batch_p2p_comm=False`` comes from ``cpu_support.transformer_config_defaults()``
      and the schedule's sends stay synchronous.
    """
    if layout.pipeline_parallel == 1:
        return {}
    out = {"deallocate_pipeline_outputs": True}
    if cuda and layout.interleaved():
        out.update(overlap_p2p_comm=True, batch_p2p_comm=False)
    return out


def transformer_config(cfg: JobConfig, arch: LlamaArch):
    """megatron-core TransformerConfig for this job."""
    m, p = cfg.model, cfg.parallel
    use_te = (
        transformer_engine_available() if m.transformer_engine is None else m.transformer_engine
    )
    overrides: dict[str, Any] = dict(
        **gpu_fusions(use_te),
        tensor_model_parallel_size=p.tensor_parallel,
        pipeline_model_parallel_size=p.pipeline_parallel,
        virtual_pipeline_model_parallel_size=p.virtual_pipeline_parallel
        if p.interleaved()
        else None,
        context_parallel_size=p.context_parallel,
        sequence_parallel=p.sequence_parallel,
        calculate_per_token_loss=True,
    )
    overrides.update(pipeline_comm_options(p, cuda=torch.cuda.is_available()))
    if arch.sliding_window and needs_arbitrary_mask(cfg):
        # check_startup allows this only for seq_length <= window, where the window
        # masks nothing: without it megatron-core applies the explicit masks as given
        overrides["window_size"] = None
    if m.recompute == "full":
        overrides.update(
            recompute_granularity="full",
            recompute_method="uniform",
            recompute_num_layers=m.recompute_num_layers,
        )
    elif m.recompute == "selective":
        overrides.update(recompute_granularity="selective")
    if m.fp8:
        overrides.update(
            fp8=m.fp8,
            fp8_recipe=m.fp8_recipe,
            fp8_amax_history_len=m.fp8_amax_history_len,
            fp8_amax_compute_algo=m.fp8_amax_compute_algo,
        )
    return to_transformer_config(arch, DTYPES[m.dtype], **overrides)


def build_model_chunks(cfg: JobConfig, src: ModelSource, config) -> list:
    """This rank's model chunks (several with virtual pipeline stages)."""
    vpp = cfg.parallel.virtual_pipeline_parallel or 1
    chunks = []
    for i in range(vpp):
        model = build_gpt_model(
            src.arch,
            config,
            vp_stage=i if vpp > 1 else None,
            use_te=cfg.model.transformer_engine,
            padded_vocab=src.padded_vocab,
            arbitrary_mask=needs_arbitrary_mask(cfg),
            packed=packed_attention(cfg),
        )
        if cfg.lora.enabled:
            from megatron_lang.training.lora import apply_lora

            apply_lora(model, cfg.lora, cfg.train.seed)
        if torch.cuda.is_available():
            model.cuda(torch.cuda.current_device())
        chunks.append(model)
    return chunks


def wrap_ddp(cfg: JobConfig, config, chunks: list) -> list:
    """megatron-core DDP around each chunk (fp32 grad reduction, bucketed).

    The buckets are ``optimizer.ddp_bucket_size`` parameters whatever the DP size and
    whether or not gradients are reduced during the backward pass, so a ``dp_reshardable``
    checkpoint (whose optimizer shards follow the buckets) resumes on another node count
    and with ``overlap_grad_reduce`` toggled. megatron-core would size the buckets by DP
    and use one bucket without overlap; it reads ``bucket_size`` once, in the DDP
    constructor, and ``overlap_grad_reduce`` at every backward hook and grad sync. So the
    DDP is built as for overlap, then (overlap off) its config switched to synchronous
    reduction: ``finish_grad_sync`` then reduces bucket by bucket after the backward.
    """
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig

    opt = cfg.optimizer
    if opt.ddp_bucket_size < 1:
        raise StartupError(
            f"optimizer.ddp_bucket_size must be a positive number of parameters, got "
            f"{opt.ddp_bucket_size!r}"
        )
    ddp_config = DistributedDataParallelConfig(
        grad_reduce_in_fp32=True,
        overlap_grad_reduce=True,  # for the constructor's bucket layout; switched below
        overlap_param_gather=opt.overlap_param_gather,
        use_distributed_optimizer=opt.use_distributed_optimizer,
        check_for_nan_in_grad=False,
        bucket_size=opt.ddp_bucket_size,
    )
    wrapped = [
        DistributedDataParallel(config, ddp_config, chunk, disable_bucketing=i > 0)
        for i, chunk in enumerate(chunks)
    ]
    ddp_config.overlap_grad_reduce = opt.overlap_grad_reduce  # shared by chunks and buffers
    return wrapped


def build_optimizer(cfg: JobConfig, ddp_chunks: list):
    """megatron-core Adam (distributed when configured), norms without weight decay."""
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer

    opt, dtype = cfg.optimizer, cfg.model.dtype
    return get_megatron_optimizer(
        OptimizerConfig(
            optimizer="adam",
            lr=opt.lr,
            min_lr=opt.min_lr,
            weight_decay=opt.weight_decay,
            adam_beta1=opt.adam_beta1,
            adam_beta2=opt.adam_beta2,
            adam_eps=opt.adam_eps,
            clip_grad=opt.clip_grad,
            bf16=dtype == "bf16",
            params_dtype=DTYPES[dtype],
            use_distributed_optimizer=opt.use_distributed_optimizer,
        ),
        ddp_chunks,
    )


def build_scheduler(cfg: JobConfig, optimizer):
    """megatron-core OptimizerParamScheduler: warm-up then cosine/linear/constant/WSD."""
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

    opt, steps = cfg.optimizer, cfg.train.steps
    decay = opt.decay_steps or steps
    style = {"wsd": "WSD"}.get(opt.schedule, opt.schedule)
    wsd_steps = opt.wsd_decay_steps or max(1, steps // 10)
    return OptimizerParamScheduler(
        optimizer,
        init_lr=0.0,
        max_lr=opt.lr,
        min_lr=opt.min_lr if opt.schedule != "constant" else opt.lr,
        lr_warmup_steps=opt.warmup_steps,
        lr_decay_steps=max(decay, opt.warmup_steps + 1),
        lr_decay_style=style,
        start_wd=opt.weight_decay,
        end_wd=opt.weight_decay,
        wd_incr_steps=max(1, steps),
        wd_incr_style="constant",
        wsd_decay_steps=wsd_steps if opt.schedule == "wsd" else None,
        lr_wsd_decay_style=opt.wsd_decay_style if opt.schedule == "wsd" else None,
    )
