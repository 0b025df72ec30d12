"""Build script for megatron_lang: the Python package plus the pybind11 extension in csrc/."""

from glob import glob

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import find_packages, setup

# Runtime dependencies.  torch is deliberately not listed: on CPU machines the
# Makefile installs the pinned CPU wheel first (a bare `torch` requirement pulls
# gigabytes of CUDA wheels), and on GPU clusters the NVIDIA PyTorch container
# already provides torch, TransformerEngine and apex.  megatron-core itself
# requires torch>=2.6.  Exact tested versions are in requirements/constraints.txt.
INSTALL_REQUIRES = [
    "megatron-core==0.16.1",
    "numpy>=1.26",
    "transformers>=4.45",
    "tokenizers>=0.20",
    "safetensors>=0.4",
    "sentencepiece>=0.2",
    "gigatoken>=0.10",
    "nltk>=3.9",
    "tensorboard>=2.16",
    "tqdm>=4.66",
    "pyyaml>=6.0",
    "pyarrow>=15",
    "zstandard>=0.22",
    "gguf>=0.10",
    "accelerate>=1.0",
    "psutil>=5.9",
]

EXTRAS_REQUIRE = {
    # CPU machines: the pinned CPU build of PyTorch.
    "cpu": ["torch==2.13.0"],
    "dev": ["pytest>=8", "ruff>=0.6"],
}

ext_modules = [
    Pybind11Extension(
        "megatron_lang._C",
        sorted(glob("csrc/*.cpp")),
        cxx_std=17,
        extra_compile_args=["-O3"],
    )
]

setup(
    name="megatron_lang",
    version="0.1.0",
    description="Language-adaptive continued pretraining of Llama-family LLMs on Megatron-Core",
    packages=find_packages(include=["megatron_lang", "megatron_lang.*"]),
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
    ext_modules=ext_modules,
    cmdclass={"build_ext": build_ext},
    zip_safe=False,
)
