"""`aligntok-push`: push a trained model or pipeline, with its model card, to the Hugging Face Hub.

    aligntok-push runs/imagenet_f16d32/stage3/model --repo_id your-name/aligntok-f16d32 \\
        --evaluation_json eval/aligntok-vs-flux/results.json
    aligntok-push runs/dit_xl/pipeline --repo_id your-name/aligntok-dit-xl --evaluation_json eval/dit_xl/results.json \\
        --dry_run /tmp/dit_xl_upload     # writes the exact upload folder (model files + README.md), no network

See `diffusers_aligntok.hub.push_to_hub` for what is checked before anything is uploaded.
"""

import argparse
import logging
import sys
from collections.abc import Sequence

from .model_directory import HubPushError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aligntok-push",
        description="Push an AlignTok tokenizer, class-conditional DiT or text-to-image model (or pipeline) with a "
        "model card rendered from its training configs and evaluation results.",
    )
    parser.add_argument(
        "model_dir",
        metavar="MODEL_DIR",
        help="A save_pretrained directory: config.json (a model) or model_index.json (a pipeline).",
    )
    parser.add_argument("--repo_id", required=True, help="The repository, namespace/name (created if missing).")
    parser.add_argument(
        "--evaluation_json",
        nargs="+",
        action="extend",
        default=[],
        metavar="F",
        help="results.json of our evaluations of this model (tokenizer, generation, text-to-image); "
        "several after one flag, or the flag repeated. Put MODEL_DIR before it.",
    )
    parser.add_argument("--private", action="store_true", help="Create the repository private.")
    parser.add_argument(
        "--revision", default=None, metavar="B", help="Branch to commit to (created from main if missing)."
    )
    parser.add_argument("--commit_message", default=None, metavar="M")
    parser.add_argument(
        "--token", default=None, metavar="T", help="Write token; default HF_TOKEN or `hf auth login`'s."
    )
    parser.add_argument(
        "--license", default="apache-2.0", metavar="L", help="Hub license id for the card (default apache-2.0)."
    )
    parser.add_argument(
        "--dry_run",
        default=None,
        metavar="DIR",
        help="Write the folder that would be uploaded to DIR and stop (no token, no network).",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command; prints the repository URL (or the dry-run folder) and returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from .push import push_to_hub

    try:
        result = push_to_hub(
            args.model_dir,
            args.repo_id,
            evaluation_json=args.evaluation_json,
            token=args.token,
            private=args.private,
            revision=args.revision,
            commit_message=args.commit_message,
            license=args.license,
            dry_run_dir=args.dry_run,
        )
    except HubPushError as error:
        print(f"aligntok-push: error: {error}", file=sys.stderr)
        return 2
    print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
