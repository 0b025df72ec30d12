"""Per-GPU memory plan of a training job: an estimate, printed by every dry run.

Nothing here measures anything: the figures are arithmetic on the job's config
and the model's shape, for the GPU the dry run plans for (an H100 80GB with
TransformerEngine unless ``model.transformer_engine=false``). GB are 2**30 bytes,
as in the trainer's memory metrics (``max_allocated_gb``). Per component, for the
pipeline stage that needs the most (the first with 1F1B, see below):

* **weights**: parameters on this GPU x bytes of ``model.dtype``. A GPU holds
  ``1/TP`` of its stage's transformer layers (norm weights whole), the input
  embedding on the first stage and the output layer on the last (``V x h / TP``
  each; with tied embeddings and PP > 1 the last stage holds a copy), plus LoRA
  adapters (column-parallel bases: ``A`` whole, ``B`` / TP; row-parallel: ``A`` / TP).
* **main grads**: megatron-core's DDP reduces gradients in fp32
  (``grad_reduce_in_fp32=True``): 4 bytes per *trainable* parameter (the training
  stage with the most trainable parameters; frozen ones get no buffer).
* **optimizer**: Adam in fp32: master weights + 2 moments = 12 bytes per trainable
  parameter with bf16 weights (8 with fp32 weights: no master copy), divided by
  DP x CP with the distributed optimizer.
* **FP8 weights** (``model.fp8``): assumed 2 bytes per parameter of the transformer
  layers' linears: TransformerEngine keeps an FP8 copy of each weight and, on
  Hopper, its FP8 transpose for the backward pass (cached over the micro-batches
  of a step). Embedding, output layer and norms stay in ``model.dtype``. FP8 also
  stores some linear inputs in 1 byte; that saving is not counted.
* **activations**: Korthikanti et al. 2022, "Reducing Activation Recomputation in
  Large Transformer Models" (https://arxiv.org/abs/2205.05198), Table 2, bytes per
  layer and micro-batch (``s`` = sequence / CP, ``b`` micro-batch, ``h`` hidden,
  ``a`` heads, ``t`` = TP):

  ======================  ===============================  =======================
  recompute               sequence parallel                 TP only
  ======================  ===============================  =======================
  none                    ``sbh (34 + 5as/h) / t``          ``sbh (10 + 24/t + 5as/(ht))``
  selective               ``34 sbh / t``                    ``sbh (10 + 24/t)``
  full                    ``2 sbh / t``                     ``2 sbh``
  ======================  ===============================  =======================

  The ``5as/h`` term is the stored ``[b, a, s, s]`` attention probabilities: it is
  counted only with megatron-core's local ``DotProductAttention`` (the local layer
  spec, or explicit attention masks); TransformerEngine's flash attention does not
  store them. Full recompute adds one recomputed block (``recompute_num_layers``
  layers without recompute) during its backward pass. LoRA with dropout adds
  3 bytes per adapter input element (dropped input + mask; not with full recompute).
  Per layer x the layers of one model chunk x the micro-batches in flight on the
  stage: 1F1B holds ``min(PP - rank, micro-batches)`` on pipeline rank ``rank``
  (PP on the first); the interleaved schedule ``2 (PP - rank - 1) + (VPP - 1) PP + 1``
  chunk-micro-batches (megatron-core's warm-up count + 1), at most all of them.
* **logits**: the last stage's fp32 logits kept for the cross-entropy backward:
  ``s b V / t x 4`` bytes.
* **attention transients** (local ``DotProductAttention`` only): its
  ``[b, a/t, s, s]`` tensors of one layer at the peak of that layer's backward:
  with bf16, the fp32 probabilities (recomputed with selective recompute) and their
  bf16 copy, the fp32 gradient of the probabilities and the fp32 softmax-backward
  output, and megatron-core's persistent bf16 score buffer: 16 bytes per element
  with selective recompute, 10 otherwise (the stored probabilities are then in the
  activations).
* **workspace**: a fixed 3 GB for the CUDA context, NCCL buffers, cuBLAS/TE
  workspaces and allocator fragmentation.

Not counted: the embedding output and pipeline send/receive buffers (``s b h``
per micro-batch), temporary all-gather buffers, the data loader.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from megatron_lang.config import JobConfig
from megatron_lang.models.arch import LlamaArch

__all__ = [
    "GB",
    "H100_GB",
    "MemoryEstimate",
    "WARN_FRACTION",
    "WORKSPACE_GB",
    "estimate_memory",
    "in_flight_microbatches",
    "stage_parameters",
]

GB = 2**30
"""Bytes per GB in these estimates (as ``torch.cuda.max_memory_allocated() / 2**30``)."""
H100_GB = 80.0
"""Memory of the GPU the recipes plan for (H100 80GB)."""
WARN_FRACTION = 0.9
"""A total above this share of the GPU's memory gets a WARNING line."""
WORKSPACE_GB = 3.0
"""CUDA context, NCCL buffers, cuBLAS/TE workspaces and allocator fragmentation."""

_DTYPE_BYTES = {"bf16": 2, "fp32": 4}
_COLUMN = ("linear_qkv", "linear_fc1", "output_layer")


@dataclass(frozen=True)
class ParamShard:
    """One parameter as held by one GPU."""

    name: str
    """Global name (pipeline layer offsets applied), as :mod:`~megatron_lang.training.stages` matches."""
    numel: int
    """Elements on this GPU."""
    kind: str
    """``linear`` (transformer-layer linear), ``norm``, ``embedding``, ``output`` or ``lora``."""


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated memory of one GPU, by component, in GB (2**30 bytes)."""

    pipeline_stage: str
    """Which pipeline stage the figures are for (the one with the larger total)."""
    params: int
    """Parameters on this GPU."""
    trainable_params: int
    """Of these, trainable in the training stage with the most."""
    weights_gb: float
    main_grads_gb: float
    optimizer_gb: float
    fp8_weights_gb: float
    activations_gb: float
    logits_gb: float
    attention_gb: float
    """Dense attention-score transients of the local DotProductAttention (0 with flash attention)."""
    workspace_gb: float
    capacity_gb: float = H100_GB
    """GPU memory the total is compared with."""
    details: dict[str, str] = field(default_factory=dict, compare=False)
    """How each component was computed, by field name (for the table)."""
    notes: list[str] = field(default_factory=list, compare=False)
    """Settings that cost without saving memory (NOTE lines of the table)."""

    @property
    def total_gb(self) -> float:
        """Sum of the components."""
        return (
            self.weights_gb
            + self.main_grads_gb
            + self.optimizer_gb
            + self.fp8_weights_gb
            + self.activations_gb
            + self.logits_gb
            + self.attention_gb
            + self.workspace_gb
        )

    @property
    def over_limit(self) -> bool:
        """Whether the total exceeds :data:`WARN_FRACTION` of the GPU's memory."""
        return self.total_gb > WARN_FRACTION * self.capacity_gb

    def table(self) -> str:
        """The estimate as text lines (a WARNING line last when over the limit)."""
        rows = [
            ("weights", self.weights_gb),
            ("main grads", self.main_grads_gb),
            ("optimizer", self.optimizer_gb),
            ("FP8 weights", self.fp8_weights_gb),
            ("activations", self.activations_gb),
            ("logits", self.logits_gb),
            ("attention", self.attention_gb),
            ("workspace", self.workspace_gb),
        ]
        keys = [
            "weights_gb",
            "main_grads_gb",
            "optimizer_gb",
            "fp8_weights_gb",
            "activations_gb",
            "logits_gb",
            "attention_gb",
            "workspace_gb",
        ]
        lines = [
            f"memory per GPU (estimate, GB = 2^30 bytes; {self.pipeline_stage}; "
            f"{self.params:,} parameters, {self.trainable_params:,} trainable):"
        ]
        for (label, gb), key in zip(rows, keys, strict=True):
            if gb == 0 and key in ("fp8_weights_gb", "attention_gb"):
                continue
            lines.append(f"  {label:<12} {gb:7.2f}  {self.details.get(key, '')}".rstrip())
        share = self.total_gb / self.capacity_gb
        lines.append(
            f"  {'total':<12} {self.total_gb:7.2f}  of {self.capacity_gb:g} GB "
            f"(H100 80GB): {100 * share:.0f} %"
        )
        lines.extend(f"NOTE: {n}" for n in self.notes)
        if self.over_limit:
            lines.append(
                f"WARNING: the estimated {self.total_gb:.1f} GB per GPU is above "
                f"{100 * WARN_FRACTION:.0f} % of {self.capacity_gb:g} GB; expect out-of-memory "
                "errors: use model.recompute (selective, then full), a larger "
                "parallel.tensor_parallel with sequence_parallel, pipeline parallelism, "
                "the distributed optimizer, or a smaller data.micro_batch_size"
            )
        return "\n".join(lines)


def _layer_params(arch: LlamaArch, tp: int, te: bool, prefix: str) -> list[ParamShard]:
    h, d = arch.hidden_size, arch.head_dim
    q, kv, f = arch.num_attention_heads * d, arch.num_query_groups * d, arch.ffn_hidden_size
    out = [
        ParamShard(f"{prefix}self_attention.linear_qkv.weight", (q + 2 * kv) // tp * h, "linear"),
        ParamShard(f"{prefix}self_attention.linear_proj.weight", h * (q // tp), "linear"),
        ParamShard(f"{prefix}mlp.linear_fc1.weight", 2 * f // tp * h, "linear"),
        ParamShard(f"{prefix}mlp.linear_fc2.weight", h * (f // tp), "linear"),
    ]
    if arch.qkv_bias:
        out.append(
            ParamShard(f"{prefix}self_attention.linear_qkv.bias", (q + 2 * kv) // tp, "norm")
        )
    if te:  # TE's LayerNormLinear holds the norm in front of QKV and fc1
        norms = ["self_attention.linear_qkv.layer_norm_weight", "mlp.linear_fc1.layer_norm_weight"]
    else:
        norms = ["input_layernorm.weight", "pre_mlp_layernorm.weight"]
    out += [ParamShard(prefix + n, h, "norm") for n in norms]
    return out


def _lora_params(
    cfg: JobConfig, module: str, prefix: str, in_f: int, out_f: int, tp: int
) -> list[ParamShard]:
    if not cfg.lora.enabled or module not in cfg.lora.target_modules:
        return []
    r = cfg.lora.rank
    column = module in _COLUMN
    a = r * in_f if column else r * (in_f // tp)
    b = (out_f // tp) * r if column else out_f * r
    name = f"{prefix}{module}_lora"
    return [ParamShard(f"{name}.lora_A", a, "lora"), ParamShard(f"{name}.lora_B", b, "lora")]


def stage_parameters(
    cfg: JobConfig, arch: LlamaArch, padded_vocab: int, pp_rank: int, te: bool
) -> list[ParamShard]:
    """Parameters one GPU of pipeline rank ``pp_rank`` holds (any TP rank: shards are equal).

    Names are global, as megatron-core's ``GPTModel`` (with ``te`` the TransformerEngine
    spec's fused-norm names) and :mod:`~megatron_lang.training.lora` give them.
    """
    p = cfg.parallel
    tp, pp, vpp = p.tensor_parallel, p.pipeline_parallel, p.virtual_pipeline_parallel or 1
    h, d, f = arch.hidden_size, arch.head_dim, arch.ffn_hidden_size
    q, kv = arch.num_attention_heads * d, arch.num_query_groups * d
    per_chunk = arch.num_layers // (pp * vpp)
    first, last = pp_rank == 0, pp_rank == pp - 1
    vocab_shard = padded_vocab // tp * h
    out: list[ParamShard] = []
    if first:
        out.append(ParamShard("embedding.word_embeddings.weight", vocab_shard, "embedding"))
    for chunk in range(vpp):
        start = chunk * (arch.num_layers // vpp) + pp_rank * per_chunk
        for layer in range(start, start + per_chunk):
            pre = f"decoder.layers.{layer}."
            out += _layer_params(arch, tp, te, pre)
            sa, mlp = pre + "self_attention.", pre + "mlp."
            out += _lora_params(cfg, "linear_qkv", sa, h, q + 2 * kv, tp)
            out += _lora_params(cfg, "linear_proj", sa, q, h, tp)
            out += _lora_params(cfg, "linear_fc1", mlp, h, 2 * f, tp)
            out += _lora_params(cfg, "linear_fc2", mlp, f, h, tp)
    if last:
        out.append(ParamShard("decoder.final_layernorm.weight", h, "norm"))
        if not arch.tie_word_embeddings or not first:  # tied at PP=1: one shared weight
            out.append(ParamShard("output_layer.weight", vocab_shard, "output"))
        if not arch.tie_word_embeddings:
            out += _lora_params(cfg, "output_layer", "", h, padded_vocab, tp)
    return out


def in_flight_microbatches(pp: int, vpp: int | None, pp_rank: int, num_microbatches: int) -> int:
    """Model-chunk micro-batches whose activations pipeline rank ``pp_rank`` holds at once.

    megatron-core's warm-up forward passes plus the one of the steady state:
    1F1B ``PP - rank - 1 + 1``; interleaved ``2 (PP - rank - 1) + (VPP - 1) PP + 1``;
    never more than the step's micro-batches (times VPP for model chunks).
    """
    if pp == 1:
        return 1
    if vpp is None or vpp == 1:
        return min(pp - pp_rank, num_microbatches)
    warmup = 2 * (pp - pp_rank - 1) + (vpp - 1) * pp
    return min(warmup + 1, num_microbatches * vpp)


def _per_layer_activation_bytes(
    cfg: JobConfig, arch: LlamaArch, recompute: str | None, local_attention: bool
) -> float:
    """Korthikanti et al. Table 2, bytes per layer per micro-batch, + LoRA dropout inputs."""
    p, d = cfg.parallel, cfg.data
    t, sp = p.tensor_parallel, p.sequence_parallel
    s, b, h, a = (
        d.seq_length / p.context_parallel,
        d.micro_batch_size,
        arch.hidden_size,
        arch.num_attention_heads,
    )
    sbh = s * b * h
    scores = 5 * a * s / h if local_attention else 0.0
    if recompute == "full":
        return 2 * sbh / t if sp else 2 * sbh
    if recompute == "selective":
        base = 34 * sbh / t if sp else sbh * (10 + 24 / t)
    else:
        base = sbh * (34 + scores) / t if sp else sbh * (10 + 24 / t + scores / t)
    lora = cfg.lora
    if lora.enabled and lora.dropout > 0:
        q, f = a * arch.head_dim, arch.ffn_hidden_size
        inputs = {"linear_qkv": h, "linear_proj": q / t, "linear_fc1": h, "linear_fc2": f / t}
        base += sum(3 * s * b * n for m, n in inputs.items() if m in lora.target_modules)
    return base


def _activation_formula(recompute: str | None, sp: bool, local_attention: bool) -> str:
    if recompute == "full":
        return "2sbh/t" if sp else "2sbh"
    if recompute == "selective" or not local_attention:
        tail = "" if recompute == "selective" else " (flash attention)"
        return ("34sbh/t" if sp else "sbh(10+24/t)") + tail
    return "sbh(34+5as/h)/t" if sp else "sbh(10+24/t+5as/(ht))"


def _stage_estimate(
    cfg: JobConfig,
    arch: LlamaArch,
    padded_vocab: int,
    world_size: int,
    pp_rank: int,
    te: bool,
    capacity_gb: float,
) -> MemoryEstimate:
    from megatron_lang.training.build import needs_arbitrary_mask, packed_attention
    from megatron_lang.training.stages import _matches, resolve_stages

    m, p, d, o = cfg.model, cfg.parallel, cfg.data, cfg.optimizer
    tp, pp, cp = p.tensor_parallel, p.pipeline_parallel, p.context_parallel
    dp = world_size // (tp * pp * cp)
    if dp < 1:
        raise ValueError(
            f"world size {world_size} is smaller than TP x PP x CP = {tp} x {pp} x {cp}"
        )
    if m.dtype not in _DTYPE_BYTES:
        raise ValueError(f"model.dtype={m.dtype!r}: choose one of {sorted(_DTYPE_BYTES)}")
    dtype_bytes = _DTYPE_BYTES[m.dtype]
    params = stage_parameters(cfg, arch, padded_vocab, pp_rank, te)
    n_params = sum(x.numel for x in params)
    tied = arch.tie_word_embeddings
    trainable = max(
        sum(x.numel for x in params if _matches(x.name, st.trainable, tied))
        for st in resolve_stages(cfg)
    )
    details: dict[str, str] = {}

    weights = n_params * dtype_bytes
    details["weights_gb"] = f"{m.dtype}: {dtype_bytes} B x {n_params:.4g} params"
    grads = 4 * trainable
    details["main_grads_gb"] = f"fp32 grad buffer: 4 B x {trainable:.4g} trainable params"
    opt_bytes = 12 if dtype_bytes < 4 else 8
    shards = dp * cp if o.use_distributed_optimizer else 1
    optimizer = opt_bytes * trainable / shards
    what = "fp32 master + Adam m, v" if opt_bytes == 12 else "Adam m, v (fp32 weights)"
    details["optimizer_gb"] = f"{what}: {opt_bytes} B x trainable" + (
        f" / (DP x CP = {shards}), distributed optimizer"
        if o.use_distributed_optimizer
        else ", not sharded (use_distributed_optimizer=false)"
    )
    fp8 = 0.0
    if m.fp8:
        n_linear = sum(x.numel for x in params if x.kind == "linear")
        fp8 = 2 * n_linear
        details["fp8_weights_gb"] = (
            f"assumed: FP8 copy + FP8 transpose of the layer linears, 2 B x {n_linear:.4g}"
        )

    from megatron_lang.models.gpt import core_attention_kind

    # fused kernels keep no [s, s] scores: TE; and for "sdpa-packed" (PackedDotProductAttention)
    # PyTorch's varlen_attn flash kernel in bf16/fp16 on CUDA, else SDPA on 4-D views of
    # the runs of equal segments (flash, or memory-efficient with GQA's key/value heads
    # repeated in fp32). Before, its 3-D per-segment calls ran the math kernel, which
    # kept a [heads/TP, l, l] softmax per segment this plan did not count.
    local_attention = (
        core_attention_kind(te, needs_arbitrary_mask(cfg), packed_attention(cfg)) == "local"
    )
    grad_accum = d.global_batch_size // (d.micro_batch_size * dp)
    vpp = p.virtual_pipeline_parallel
    chunk_layers = arch.num_layers // (pp * (vpp or 1))
    in_flight = in_flight_microbatches(pp, vpp, pp_rank, grad_accum)
    per_layer = _per_layer_activation_bytes(cfg, arch, m.recompute, local_attention)
    activations = per_layer * chunk_layers * in_flight
    formula = _activation_formula(m.recompute, p.sequence_parallel, local_attention)
    if cfg.lora.enabled and cfg.lora.dropout > 0 and m.recompute != "full":
        formula += " + LoRA dropout inputs"
    details["activations_gb"] = (
        f"{m.recompute or 'no'} recompute, {formula} x {chunk_layers} layers x "
        f"{in_flight} micro-batch{'es' if in_flight > 1 else ''} in flight"
    )
    notes = []
    if m.recompute == "selective" and not local_attention:
        from megatron_lang.training.flops import training_flops_per_token

        extra = (
            training_flops_per_token(arch, d.seq_length, "selective", padded_vocab=padded_vocab)
            / training_flops_per_token(arch, d.seq_length, None, padded_vocab=padded_vocab)
            - 1
        )
        notes.append(
            "model.recompute=selective saves no memory here: it recomputes the core "
            "attention, whose fused/flash kernel keeps no [s, s] scores (activations as "
            f"without recompute), and adds {100 * extra:.1f} % hardware FLOPs per step; "
            "use model.recompute=null, or full if memory is short"
        )
    if m.recompute == "full":
        block = min(m.recompute_num_layers, chunk_layers)
        activations += block * _per_layer_activation_bytes(cfg, arch, None, local_attention)
        details["activations_gb"] += f" + {block} recomputed layer(s)"

    s = d.seq_length / cp
    b = d.micro_batch_size
    logits = 0.0
    if pp_rank == pp - 1:
        logits = s * b * padded_vocab / tp * 4
        details["logits_gb"] = (
            f"fp32 for the loss: s b V/t x 4 B = {s:g} x {b} x {padded_vocab}/{tp} x 4"
        )
    else:
        details["logits_gb"] = "none on this pipeline stage"

    attention = 0.0
    if local_attention:
        heads = arch.num_attention_heads // tp
        probs = 4 + (dtype_bytes if dtype_bytes < 4 else 0)  # fp32 probabilities (+ bf16 copy)
        grad_bytes = 4 + 4  # fp32 gradient of the probabilities, fp32 softmax-backward output
        per_element = grad_bytes + dtype_bytes + (probs if m.recompute == "selective" else 0)
        attention = b * heads * s * s * per_element
        why = "model.attention=dense" if needs_arbitrary_mask(cfg) else "local layer spec"
        details["attention_gb"] = (
            f"local DotProductAttention ({why}): [b, a/t, s, s] = [{b}, {heads}, {s:g}, {s:g}] "
            f"x {per_element} B, one layer at a time"
        )

    details["workspace_gb"] = "assumed: CUDA context, NCCL, TE/cuBLAS workspaces, fragmentation"
    if pp == 1:
        stage = "PP=1"
    else:
        stage = f"{'first' if pp_rank == 0 else 'last'} of {pp} pipeline stages"
    return MemoryEstimate(
        pipeline_stage=stage,
        params=n_params,
        trainable_params=trainable,
        weights_gb=weights / GB,
        main_grads_gb=grads / GB,
        optimizer_gb=optimizer / GB,
        fp8_weights_gb=fp8 / GB,
        activations_gb=activations / GB,
        logits_gb=logits / GB,
        attention_gb=attention / GB,
        workspace_gb=WORKSPACE_GB,
        capacity_gb=capacity_gb,
        details=details,
        notes=notes,
    )


def estimate_memory(
    cfg: JobConfig,
    arch: LlamaArch,
    padded_vocab: int,
    world_size: int,
    transformer_engine: bool | None = None,
    capacity_gb: float = H100_GB,
) -> MemoryEstimate:
    """Estimated memory per GPU of ``cfg`` on ``world_size`` GPUs (see the module docstring).

    Args:
        cfg: the job (layout, batch, recompute, FP8, optimizer, stages, LoRA).
        arch: the model's shape.
        padded_vocab: embedding rows as built (``ModelSource.padded_vocab``).
        world_size: GPUs of the job (DP = world / (TP x PP x CP)).
        transformer_engine: layer spec to plan for; default ``model.transformer_engine``,
            and TransformerEngine when that is unset (the H100 target).
        capacity_gb: GPU memory to compare with (H100: 80).

    Returns:
        The pipeline stage with the larger total (first or last; the only one at PP=1).

    Raises:
        ValueError: a world size below TP x PP x CP or an unknown ``model.dtype``.
    """
    te = cfg.model.transformer_engine if transformer_engine is None else transformer_engine
    te = True if te is None else te
    pp = cfg.parallel.pipeline_parallel
    ranks = [0] if pp == 1 else [0, pp - 1]
    estimates = [
        _stage_estimate(cfg, arch, padded_vocab, world_size, r, te, capacity_gb) for r in ranks
    ]
    return max(estimates, key=lambda e: e.total_gb)
