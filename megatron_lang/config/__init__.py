"""Configuration: dataclasses with a docstring per field, YAML + dotlist overrides, presets."""

from megatron_lang.config.job import (
    CheckpointConfig,
    DataConfig,
    JobConfig,
    LoggingConfig,
    LoraConfig,
    ModelConfig,
    ObjectiveConfig,
    OptimizerConfig,
    StageConfig,
    TrainConfig,
)
from megatron_lang.config.loader import (
    ConfigError,
    apply_overrides,
    dump_yaml,
    from_dict,
    load_job_config,
    to_dict,
)
from megatron_lang.config.presets import get_preset, preset_names

__all__ = [
    "CheckpointConfig",
    "ConfigError",
    "DataConfig",
    "JobConfig",
    "LoggingConfig",
    "LoraConfig",
    "ModelConfig",
    "ObjectiveConfig",
    "OptimizerConfig",
    "StageConfig",
    "TrainConfig",
    "apply_overrides",
    "dump_yaml",
    "from_dict",
    "get_preset",
    "load_job_config",
    "preset_names",
    "to_dict",
]
