"""Push a trained model or pipeline with its model card to the Hugging Face Hub: the `aligntok-push` command.

    python training/push_to_hub.py runs/imagenet_f16d32/stage3/model --repo_id your-name/aligntok-f16d32 \
        --evaluation_json eval/aligntok-vs-flux/results.json [--private] [--revision B] [--dry_run DIR]

Everything happens in `diffusers_aligntok.hub` (`push_to_hub`, `aligntok-push --help`); this file only runs it.
"""

import sys

from diffusers_aligntok.hub.cli import main


if __name__ == "__main__":
    sys.exit(main())
