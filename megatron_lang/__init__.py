"""megatron_lang: language-adaptive continued pretraining on Megatron-Core.

Importing the package needs neither CUDA nor TransformerEngine; heavy
subpackages (megatron-core, transformers) are imported where they are used.
"""

__version__ = "0.1.0"
