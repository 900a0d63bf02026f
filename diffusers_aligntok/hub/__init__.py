"""Hub uploads: model cards rendered from our configs and evaluation results, and a checked push.

    from diffusers_aligntok.hub import push_to_hub
    url = push_to_hub("runs/x/stage3/model", "your-name/aligntok-f16d32", evaluation_json=["eval/x/results.json"])

or, from a shell, `aligntok-push MODEL_DIR --repo_id ID [--evaluation_json F ...] [--dry_run DIR]`.

- [`push_to_hub`] (`push.py`): checks the repository id, the token, the directory, each evaluation JSON (it must
  belong to the model) and that the upload folder loads in a fresh process, then creates the repository (and branch)
  and uploads one commit. `dry_run_dir` writes the upload folder instead.
- [`render_model_card`] (`card.py`): the card alone, from the templates in `templates/` (package data).
- [`inspect_model_directory`] (`model_directory.py`): which of our model kinds a directory holds.

Nothing here is imported by `import diffusers_aligntok`; the training scripts import it only for `--push_to_hub`.
"""

from .card import render_model_card
from .evaluations import EVALUATION_KINDS, load_evaluation
from .model_directory import KINDS, HubPushError, ModelDirectory, inspect_model_directory
from .push import push_to_hub


__all__ = [
    "EVALUATION_KINDS",
    "HubPushError",
    "KINDS",
    "ModelDirectory",
    "inspect_model_directory",
    "load_evaluation",
    "push_to_hub",
    "render_model_card",
]
