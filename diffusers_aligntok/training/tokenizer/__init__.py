"""The tokenizer recipe: the paper's three alignment stages (`accelerate launch training/train_stage.py`)."""
