"""Loading a pushed directory the way a reader of its card will: in a fresh Python process, after `import
diffusers_aligntok`, with the class (or `DiffusionPipeline`) the card's usage code calls.

The same process reports the weight fingerprints (`tokenizer_fingerprint`: config + weights) that generation and
text-to-image evaluations record, so an evaluation JSON is compared with exactly what was loaded.
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from .model_directory import HubPushError, ModelDirectory


_MARKER = "ALIGNTOK_PUSH_LOAD_CHECK "
# How much of the child's error output a failure message quotes.
_ERROR_TAIL_CHARACTERS = 3000


def describe_loaded(loaded: Any) -> dict[str, Any]:
    """The class, component classes and weight fingerprints (by role, `transformer` / `vae`) of a loaded model or
    pipeline. A tokenizer alone reports its fingerprint as `vae`, the role it has in a pipeline."""
    from ..utils import tokenizer_fingerprint

    components = getattr(loaded, "components", None)
    if isinstance(components, dict):
        return {
            "class_name": type(loaded).__name__,
            "components": {
                name: type(component).__name__ for name, component in components.items() if component is not None
            },
            "fingerprints": {
                role: tokenizer_fingerprint(components[role])
                for role in ("transformer", "vae")
                if components.get(role) is not None
            },
        }
    role = "vae" if type(loaded).__name__ == "AlignedAutoencoderKL" else "transformer"
    return {
        "class_name": type(loaded).__name__,
        "components": {},
        "fingerprints": {role: tokenizer_fingerprint(loaded)},
    }


def load_check_script(model: ModelDirectory) -> str:
    """The program the fresh process runs (the directory is its first argument): what a card's reader would type."""
    module, class_name = model.load_target.rsplit(".", 1)
    return "\n".join(
        [
            "import json, sys",
            "import diffusers_aligntok  # registers our classes, as the card's usage code does first",
            f"from {module} import {class_name}",
            f"loaded = {class_name}.from_pretrained(sys.argv[1])",
            "from diffusers_aligntok.hub.loading import describe_loaded",
            f"print({_MARKER!r} + json.dumps(describe_loaded(loaded)), flush=True)",
        ]
    )


def check_loads_in_fresh_process(directory: Path, model: ModelDirectory) -> dict[str, Any]:
    """Loads `directory` (the folder to upload, holding `model`'s files) in a new Python process and returns
    [`describe_loaded`]'s report; raises `HubPushError` with the child's error if it does not load as `model`'s class.

    The child runs offline (`HF_HUB_OFFLINE=1`): a local directory must load without the network.
    """
    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
    completed = subprocess.run(
        [sys.executable, "-c", load_check_script(model), str(directory)],
        capture_output=True,
        text=True,
        env=environment,
        cwd=tempfile.gettempdir(),
        check=False,
    )
    report = next(
        (json.loads(line[len(_MARKER) :]) for line in completed.stdout.splitlines() if line.startswith(_MARKER)), None
    )
    if completed.returncode != 0 or report is None:
        tail = (completed.stderr or completed.stdout).strip()[-_ERROR_TAIL_CHARACTERS:]
        raise HubPushError(
            f"{model.path} does not load with `import diffusers_aligntok; {model.load_target}.from_pretrained(...)` in "
            f"a fresh Python process (exit status {completed.returncode}), so the card's usage code would fail. "
            f"Fix the directory (re-export it with save_pretrained) and push again. The error:\n{tail}"
        )
    if report["class_name"] != model.class_name:
        raise HubPushError(
            f"{model.path} loads as {report['class_name']}, not as the {model.class_name} its config names; "
            f"`import diffusers_aligntok` before loading, and check model_index.json's _class_name."
        )
    return report


def fingerprints_in_process(model: ModelDirectory) -> dict[str, str]:
    """[`describe_loaded`]'s fingerprints, loading `model` in this process (rendering a card without pushing)."""
    import importlib

    import diffusers_aligntok  # noqa: F401  (registers our classes with diffusers)

    module, class_name = model.load_target.rsplit(".", 1)
    loaded = getattr(importlib.import_module(module), class_name).from_pretrained(str(model.path))
    return describe_loaded(loaded)["fingerprints"]
