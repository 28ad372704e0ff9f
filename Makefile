# The two set-up commands of the README:
#   make demo   installs audiostem, builds the built-in folk dataset and trains recipes/folk.yaml on CPU
#   make test   installs audiostem with its test tools and the export extra (ONNX) and runs the test
#               suite (what CI runs)
#
# The virtual environment lives outside the clone (a torch venv is ~6 GB) and is reused by every
# clone and CI run; it is created when missing. Override with `make test VENV=/path/to/venv`.
VENV ?= $(HOME)/.cache/audiostem/venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: install demo test bench

install:
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev,export]'

demo: install
	$(PY) -m audiostem.train recipes/folk.yaml

test: install
	MPLBACKEND=Agg $(PY) -m pytest

bench: install
	$(PY) benchmarks/prep_audio.py
	$(PY) benchmarks/prep_midi.py
	$(PY) benchmarks/train_loop.py
	$(PY) benchmarks/export_latency.py
