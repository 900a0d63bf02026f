# Fresh machine: `make install` creates .venv with pinned torch/torchvision (the pair that exists on our CI machines;
# users elsewhere can `pip install -e ".[training]"` with any compatible torch) and the package in editable mode.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

.PHONY: install test lint wheel-check demo train-tiny train-t2i-tiny benchmark clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.py
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet $(TORCH_PINS) -e ".[dev]"
	touch $@

test: install
	$(PYTHON) -m pytest -n 2 tests

# diffusers' ruff settings (ruff.toml).
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Build the wheel, install it into a fresh venv outside the checkout, run aligntok-demo and an evaluation from there.
wheel-check:
	TORCH_PINS="$(TORCH_PINS)" .ci/wheel_check.sh

# The whole AlignTok pipeline in miniature (toy encoder pretraining, stages 1-3, DiT, samples) in under 10 minutes.
demo: install
	HF_HUB_OFFLINE=1 $(VENV)/bin/aligntok-demo --output_dir runs/demo

# The main job on the built-in data: all three alignment stages of the tiny recipe, on CPU, in well under a minute.
train-tiny: install
	HF_HUB_OFFLINE=1 $(PYTHON) training/train_stage.py --config training/configs/tiny_cpu.yaml --stage all --output_dir runs/tiny

# Text-to-image smoke run on a copy of the tiny tokenizer above, given FLUX-style global latent statistics first:
# a tiny FLUX transformer with tiny random text encoders on the built-in captioned shapes.
train-t2i-tiny: train-tiny
	rm -rf runs/t2i_tiny_vae && cp -r runs/tiny/stage3/model runs/t2i_tiny_vae
	HF_HUB_OFFLINE=1 $(PYTHON) training/compute_latent_statistics.py --model runs/t2i_tiny_vae --data builtin:shapes \
		--resolution 32 --num_samples 256 --normalization global --write
	HF_HUB_OFFLINE=1 $(PYTHON) training/train_t2i.py --config training/configs/t2i_tiny_cpu.yaml \
		--vae runs/t2i_tiny_vae --output_dir runs/t2i_tiny

benchmark: install
	$(PYTHON) benchmarks/tokenizer_speed.py

clean:
	rm -rf runs .pytest_cache
