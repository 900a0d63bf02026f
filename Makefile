# Fresh machine: `make install` creates .venv with pinned torch/torchvision (the pair that exists on our CI machines;
# users elsewhere can `pip install -e ".[training]"` with any compatible torch) and the package in editable mode.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: install test demo train-tiny benchmark clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.py
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet $(TORCH_PINS) -e ".[dev]"
	touch $@

test: install
	$(PYTHON) -m pytest -n 2 tests

# The whole AlignTok pipeline in miniature (toy encoder pretraining, stages 1-3, DiT, samples) in under 10 minutes.
demo: install
	HF_HUB_OFFLINE=1 $(VENV)/bin/aligntok-demo --output_dir runs/demo

# The main job on the built-in data: all three alignment stages of the tiny recipe, on CPU, in well under a minute.
train-tiny: install
	HF_HUB_OFFLINE=1 $(PYTHON) training/train_stage.py --config training/configs/tiny_cpu.yaml --stage all --output_dir runs/tiny

benchmark: install
	$(PYTHON) benchmarks/autoencoder_cpu_cost.py

clean:
	rm -rf runs .pytest_cache
