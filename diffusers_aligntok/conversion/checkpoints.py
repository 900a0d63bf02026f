"""Loading released training checkpoints without running their pickles.

A `.pt` checkpoint is a pickle, and unpickling can run arbitrary code. [`load_tensor_checkpoint`] reads one with
`torch.load(weights_only=True)`, which rebuilds only tensors and plain containers (dicts, lists, tuples, numbers,
strings) and refuses anything else; [`select_state_dict`] then finds the model weights inside the usual layouts.
"""

import os
import pickle
from collections.abc import Mapping, Sequence
from typing import Any

import torch


# Prefixes that wrappers add to every key: DistributedDataParallel (`module.`) and torch.compile (`_orig_mod.`).
WRAPPER_KEY_PREFIXES = ("module.", "_orig_mod.")


def load_tensor_checkpoint(checkpoint_path: str | os.PathLike) -> Any:
    """`torch.load` of a checkpoint that may hold only tensors and plain containers.

    The file is memory-mapped where its format allows, so the parts of a training checkpoint that are never used (the
    optimiser state, a second copy of the weights) are not read into memory.

    Raises:
        FileNotFoundError: The path does not exist.
        ValueError: The pickle holds other Python objects (it is refused, not unpickled).
    """
    checkpoint_path = os.fspath(checkpoint_path)
    if not os.path.isfile(checkpoint_path):
        raise FileNotFoundError(f"No checkpoint file at {checkpoint_path!r}.")
    try:
        try:
            return torch.load(checkpoint_path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
            # Files written with the legacy (non-zip) serialization cannot be memory-mapped.
            return torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(
            f"{checkpoint_path!r} holds Python objects other than tensors and plain containers, so it was refused "
            f"instead of unpickled (unpickling arbitrary objects can run code); torch.load(weights_only=True) said: "
            f"{reason}. If you trust the file, re-save only its weights, e.g. "
            "`torch.save({'ema': checkpoint['ema']}, 'weights.pt')`, and convert that."
        ) from error


def select_state_dict(
    checkpoint: Any, preferred_keys: Sequence[str] = ("ema", "model"), source: str = "the checkpoint"
) -> tuple[dict[str, torch.Tensor], str]:
    """The model weights inside a loaded checkpoint, and where they were found.

    Takes the first of `preferred_keys` that the checkpoint has (training scripts save `{"model", "ema", "opt", ...}`;
    the EMA weights are the ones to sample with), or the checkpoint itself when it is a bare state dict (every value a
    tensor). Wrapper prefixes (`module.`, `_orig_mod.`) are stripped from the keys.

    Returns:
        `(state_dict, location)`, `location` being the key used or `"the top level"`.
    """
    if not isinstance(checkpoint, Mapping):
        raise ValueError(
            f"Expected {source} to hold a dict (a state dict, or one with {list(preferred_keys)} entries), got "
            f"{type(checkpoint).__name__}."
        )
    for key in preferred_keys:
        if key in checkpoint:
            state_dict, location = checkpoint[key], repr(key)
            break
    else:
        state_dict, location = checkpoint, "the top level"
    if not isinstance(state_dict, Mapping) or not state_dict:
        raise ValueError(f"The {location} entry of {source} is not a non-empty state dict.")
    not_tensors = [key for key, value in state_dict.items() if not torch.is_tensor(value)]
    if not_tensors:
        raise ValueError(
            f"{source} has no {' or '.join(repr(key) for key in preferred_keys)} entry, and its {location} is not a "
            f"state dict: {not_tensors[0]!r} (of {len(not_tensors)} such entries) is not a tensor. Top-level keys: "
            f"{sorted(map(str, checkpoint))[:10]}."
        )
    return strip_key_prefixes(state_dict), location


def strip_key_prefixes(
    state_dict: Mapping[str, torch.Tensor], prefixes: Sequence[str] = WRAPPER_KEY_PREFIXES
) -> dict[str, torch.Tensor]:
    """Removes wrapper prefixes (in any order and number, e.g. `module._orig_mod.`) from the start of every key."""
    stripped = {}
    for key, value in state_dict.items():
        name = key
        while name.startswith(tuple(prefixes)):
            name = name[next(len(prefix) for prefix in prefixes if name.startswith(prefix)) :]
        if name in stripped:
            raise ValueError(
                f"Keys {key!r} and another one both become {name!r} once the wrapper prefixes are removed."
            )
        stripped[name] = value
    return stripped
