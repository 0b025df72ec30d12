"""The training job's configuration: dataclasses with a docstring under each field.

A job is a YAML file plus ``a.b.c=value`` overrides (see :mod:`megatron_lang.config.loader`).
The resolved configuration is saved with every checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from megatron_lang.platform.parallel import ParallelLayout


@dataclass
class ModelConfig:
    """Which model, in which precision, with which kernels."""

    preset: str | None = "tiny-llama"
    """Named shape from :mod:`megatron_lang.config.presets` (ignored when ``checkpoint`` is set)."""
    checkpoint: str | None = None
    """Converted HF checkpoint (``hf_to_megatron`` output) to start from: weights only, fresh optimizer."""
    arch: dict[str, Any] = field(default_factory=dict)
    """Overrides of :class:`~megatron_lang.models.arch.LlamaArch` fields (e.g. ``num_layers``)."""
    dtype: str = "bf16"
    """Parameter/compute dtype: ``bf16`` or ``fp32`` (gradients are reduced in fp32)."""
    fp8: str | None = None
    """FP8 format on GPUs with TransformerEngine: ``hybrid`` or ``e4m3``; None = off."""
    fp8_recipe: str = "delayed"
    """FP8 scaling recipe: ``delayed`` (amax history) or ``tensorwise`` (current scaling)."""
    fp8_amax_history_len: int = 1024
    """Length of the amax history window for delayed scaling."""
    fp8_amax_compute_algo: str = "max"
    """How the scale is derived from the amax history: ``max`` or ``most_recent``."""
    recompute: str | None = None
    """Activation recomputation: None, ``selective`` (attention core) or ``full``."""
    recompute_num_layers: int = 1
    """Layers per recomputed block with ``full`` recomputation (uniform method)."""
    make_vocab_size_divisible_by: int = 128
    """Vocabulary padding divisor (times TP) for models built from a preset."""
    transformer_engine: bool | None = None
    """Force the TransformerEngine layer spec on (True) or off (False); None = auto (CUDA + TE)."""
    attention: str = "packed"
    """How samples that are not plainly causal attend (hybrid MNTP, ``objective.bidirectional``,
    ``data.document_attention``): ``packed`` -- per-document segments with ``cu_seqlens``
    (TransformerEngine flash/fused THD kernels on GPUs, PyTorch SDPA per segment without
    TE), no ``[S, S]`` mask; ``dense`` -- explicit ``[S, S]`` masks through megatron-core's
    unfused local attention (the reference the tests hold ``packed`` to; slow, S² memory)."""


@dataclass
class DataConfig:
    """Where the tokens come from and how they are batched."""

    blend: str | None = None
    """Blend spec (YAML, see docs/blends.md) of Megatron indexed datasets."""
    tokenizer: str | None = None
    """Tokenizer directory / file; default: the one saved in ``model.checkpoint``."""
    seq_length: int = 2048
    """Tokens per sample."""
    micro_batch_size: int = 1
    """Samples per micro-batch per data-parallel rank."""
    global_batch_size: int = 8
    """Samples per optimizer step over all data-parallel ranks (gradient accumulation fills the rest)."""
    document_attention: bool = False
    """No attention across documents packed into one sample; position ids restart per document."""
    eod_mask_loss: bool = False
    """Do not train on predicting the token after an EOD."""
    cache_dir: str | None = None
    """Folder for megatron-core's dataset index files, shared by all ranks: rank 0 builds
    them once, the others (and later runs) load them. None: ``<checkpoint.dir>/index_cache``,
    else ``megatron_lang-index-cache`` in the system temp folder. Never beside the data,
    which may be read-only or a node-local copy."""
    valid_samples: int | None = None
    """Samples per validation set (None: one pass)."""
    chat: str | None = None
    """Instruction tuning: a chat data folder (``tools/preprocess/preprocess_chat.py``) of
    packed, answer-masked conversations, instead of ``blend``. Each conversation is its own
    attention segment; the loss is the mean over the global batch's trained tokens."""
    chat_valid: str | None = None
    """Held-out conversations (a chat data folder) for the validation loss of a chat run."""


@dataclass
class OptimizerConfig:
    """Adam(W), clipping, learning-rate schedule, gradient communication."""

    lr: float = 3e-4
    """Peak learning rate."""
    min_lr: float = 3e-5
    """Final learning rate of the decay."""
    weight_decay: float = 0.1
    """Decoupled weight decay (not applied to norms)."""
    adam_beta1: float = 0.9
    """Adam beta1."""
    adam_beta2: float = 0.95
    """Adam beta2."""
    adam_eps: float = 1e-8
    """Adam epsilon."""
    clip_grad: float = 1.0
    """Global gradient-norm clip (0 = off)."""
    schedule: str = "cosine"
    """``cosine``, ``linear``, ``constant`` or ``wsd`` (warmup-stable-decay)."""
    warmup_steps: int = 0
    """Linear warm-up steps from 0 to ``lr``."""
    decay_steps: int | None = None
    """Steps over which the LR decays (None: the whole run)."""
    wsd_decay_steps: int | None = None
    """Length of the final decay phase of ``wsd`` (None: 10% of the run)."""
    wsd_decay_style: str = "cosine"
    """Shape of the ``wsd`` decay phase: ``cosine``, ``linear``, ``exponential``, ``minus_sqrt``."""
    use_distributed_optimizer: bool = True
    """Shard optimizer state over data-parallel ranks (ZeRO-1)."""
    overlap_grad_reduce: bool = False
    """Overlap the gradient reduce-scatter with the backward pass (GPUs)."""
    overlap_param_gather: bool = False
    """Overlap the parameter all-gather with the next forward pass (GPUs; needs the distributed optimizer)."""
    ddp_bucket_size: int = 40_000_000
    """Parameters per gradient-reduction bucket, whatever the DP size and whether or not
    ``overlap_grad_reduce`` is on (megatron-core's own default, ``max(40M, 1M x DP)``, and
    its single bucket without overlap, change the ``dp_reshardable`` optimizer layout with
    the node count). A checkpoint resumes only with the bucket size it was saved with."""


@dataclass
class TrainConfig:
    """Length of the run, seeding, evaluation and failure policy."""

    steps: int = 100
    """Optimizer steps in the run."""
    epochs: float | None = None
    """With ``data.chat``: the run length in passes over the packed samples; sets
    ``steps = ceil(epochs x samples / data.global_batch_size)`` (the last step's surplus
    samples come from the next epoch's order)."""
    seed: int = 1234
    """Seed of weights, dropout and data order."""
    log_interval: int = 1
    """Console line every N steps."""
    eval_interval: int | None = None
    """Validation every N steps (None: only at the end when validation sets exist)."""
    eval_steps: int = 10
    """Global batches per validation set and evaluation."""
    eval_at_start: bool = False
    """Also validate before the first step (the start point's perplexity per language)."""
    max_skipped_steps: int = 10
    """Stop the run after this many steps skipped for a NaN/Inf loss."""


@dataclass
class CheckpointConfig:
    """Saving, resuming and stopping on signals."""

    dir: str | None = None
    """Where checkpoints are written (``iter_XXXXXXX`` folders and a ``latest`` pointer)."""
    save_interval: int | None = None
    """Save every N steps (None: only at the end and on a signal)."""
    resume: bool = True
    """Continue from ``dir``'s ``latest`` checkpoint when there is one."""
    async_save: bool = False
    """Write checkpoints in the background (megatron-core async save); `latest` moves when done."""
    exit_signals: list[str] = field(default_factory=lambda: ["SIGTERM", "SIGUSR1"])
    """Signals that trigger save-and-exit (SLURM preemption sends SIGTERM / --signal=USR1)."""
    keep_last: int | None = None
    """Delete older checkpoints, keeping this many (None: keep all)."""
    optimizer_format: str = "dp_reshardable"
    """Distributed-optimizer state format: ``dp_reshardable`` (each rank writes its own
    shard, no gather; resumes at another DP size, not another TP/PP/VPP/CP) or
    ``fully_reshardable`` (gathered per parameter in host memory: ~12 bytes/param per
    model-parallel shard; resumes at any layout). Use the latter for the save before a
    layout change."""


@dataclass
class LoggingConfig:
    """Console and TensorBoard."""

    tensorboard_dir: str | None = None
    """TensorBoard event files (None: no TensorBoard)."""
    metrics_file: str | None = None
    """Append one JSON line of metrics per step (and per evaluation) here (None: off)."""
    level: str = "INFO"
    """Console log level."""


@dataclass
class StageConfig:
    """One stage of a staged run (e.g. embeddings only, then everything).

    Stages run in order over one continuous data stream; each has its own set of
    trainable parameters, a fresh optimizer over exactly those parameters (frozen
    ones have no optimizer state) and its own LR schedule counted from the
    stage's first step. A resumed run continues in the stage its checkpoint was in.
    """

    name: str = "full"
    """Label used in logs, metrics and the checkpoint's train state."""
    steps: int | None = None
    """Optimizer steps of this stage; None (last stage only): the rest of ``train.steps``."""
    trainable: list[str] = field(default_factory=lambda: ["all"])
    """What trains: ``all``, ``embeddings`` (input embeddings), ``lm_head`` (output layer),
    ``lora`` (the adapters; the default when ``lora.enabled``), or
    glob patterns over global parameter names (``decoder.layers.*.mlp.*``). Tied input and
    output embeddings are one parameter: naming either trains both (all their PP copies)."""
    optimizer: dict[str, Any] = field(default_factory=dict)
    """Overrides of :class:`OptimizerConfig` fields for this stage (``lr``, ``min_lr``,
    ``schedule``, ``warmup_steps``, ``decay_steps``, ``weight_decay`` ...)."""


@dataclass
class ObjectiveConfig:
    """The training objective: causal LM, hybrid causal + masked next-token prediction, bidirectional.

    See docs/training.md ("Objectives"). MNTP samples keep the original next tokens
    as labels and count the loss only at positions whose next token was masked;
    their attention is bidirectional within each document.
    """

    mntp_fraction: float = 0.0
    """Share of sequences trained with MNTP (0 = pure causal LM; NorMistral used 0.1)."""
    mask_ratio: float = 1 / 6
    """Share of an MNTP sample's maskable (non-special) tokens that are masked."""
    mask_span_min: int = 1
    """Shortest masked span (tokens)."""
    mask_span_max: int = 3
    """Longest masked span (tokens)."""
    mask_token_prob: float = 0.8
    """Share of spans replaced by the mask token."""
    random_token_prob: float = 0.1
    """Share of spans replaced by random tokens (the rest are kept unchanged)."""
    mask_token: str | None = None
    """Mask token string (None: the tokenizer's ``mask_token``, else an added ``<mask>``)."""
    bidirectional: bool = False
    """Bidirectional mode (LLM2Vec): every sequence is an MNTP sample with full attention
    within its documents, in training and validation (``mntp_fraction`` must be 0 or 1)."""

    @property
    def enabled(self) -> bool:
        """Whether any sequence is an MNTP sample."""
        return self.bidirectional or self.mntp_fraction > 0


@dataclass
class LoraConfig:
    """Low-rank adapters (LoRA) on the decoder's parallel linear layers.

    With ``enabled`` the base weights are frozen and only the adapters train
    (unless a stage's ``trainable`` names more). Each adapted layer computes
    ``W x + (alpha / rank) * B (A dropout(x))`` with ``B`` zero at the start,
    so the adapted model starts equal to the base model.
    """

    enabled: bool = False
    """Add adapters and train only them (a stage's default ``trainable`` becomes ``lora``)."""
    rank: int = 16
    """Rank ``r`` of each adapter (A is ``[r, in]``, B ``[out, r]``)."""
    alpha: float = 32
    """Scale numerator: the update is ``(alpha / rank) * B A``."""
    dropout: float = 0.0
    """Dropout on the adapter's input while training (0: off)."""
    target_modules: list[str] = field(
        default_factory=lambda: ["linear_qkv", "linear_proj", "linear_fc1", "linear_fc2"]
    )
    """Adapted layers: ``linear_qkv``, ``linear_proj``, ``linear_fc1`` (gate/up fused),
    ``linear_fc2`` and ``output_layer`` (untied LM head only)."""


@dataclass
class JobConfig:
    """A whole training job."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """The model."""
    parallel: ParallelLayout = field(default_factory=ParallelLayout)
    """TP x PP (x VPP) x CP; DP is derived from the world size."""
    data: DataConfig = field(default_factory=DataConfig)
    """Data and batching."""
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    """Optimizer and schedule."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Run length and policies."""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """Checkpointing."""
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    """Logging."""
    stages: list[StageConfig] = field(default_factory=list)
    """Training stages in order (empty: one stage training everything for ``train.steps``)."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """Low-rank adapters (off by default)."""
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    """Causal LM (default), hybrid causal + MNTP, or bidirectional mode."""
