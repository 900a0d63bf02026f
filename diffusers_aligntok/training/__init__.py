"""Importable pieces of `training/train_stage.py`: config, stage setup, the step function, checkpoints, validation.

Nothing here is imported by `import diffusers_aligntok`; these modules need the `training` extra.
"""
