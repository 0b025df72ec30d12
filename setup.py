"""Build script for megatron_lang: the Python package plus the pybind11 extension in csrc/."""

from glob import glob
from pathlib import Path

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import find_packages, setup

# Runtime dependencies live in requirements/base.txt (also used on their own to
# install into GPU containers without touching torch).  torch is deliberately not
# listed: on CPU machines the Makefile installs the pinned CPU wheel first (a bare
# `torch` requirement pulls gigabytes of CUDA wheels); the "cpu" extra pins it too.
# Exact tested versions: requirements/constraints.txt.
HERE = Path(__file__).resolve().parent
INSTALL_REQUIRES = [
    req
    for line in (HERE / "requirements" / "base.txt").read_text().splitlines()
    if (req := line.split("#", 1)[0].strip())
]

EXTRAS_REQUIRE = {
    # CPU machines: the pinned CPU build of PyTorch.
    "cpu": ["torch==2.13.0"],
    # mistral-common: the real Mistral-7B / Nemo tokenizers that the tests read
    "dev": ["pytest>=8", "ruff>=0.6", "mistral-common>=1.5"],
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
