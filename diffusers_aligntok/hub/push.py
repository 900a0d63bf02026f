"""Push a trained model or pipeline, with its model card, to the Hugging Face Hub: [`push_to_hub`].

Order of work, so that every bad input fails before anything is uploaded:

1. the repository id (`validate_repo_id`) and, unless it is a dry run, a token (`token=`, else `HF_TOKEN` or the
   login cache of `hf auth login`);
2. the directory (a config and weights; see `model_directory.py`) and each evaluation JSON's kind;
3. the upload folder is written (weights hard-linked, `model_index.json` naming our library, see
   `normalized_model_index`) and loaded in a fresh Python process with `import diffusers_aligntok;
   <Class or DiffusionPipeline>.from_pretrained(folder)`, which also reports the weight fingerprints;
4. each evaluation JSON is checked against the loaded model (fingerprints, or paths and weights for tokenizer
   evaluations) and the card is rendered, parsed back and compared with what was rendered (`build_model_card`);
5. only then: `create_repo(exist_ok=True)` (a `private` push into an existing public repository is refused),
   `create_branch(exist_ok=True)` for a revision other than main, and one `upload_folder` commit.

The endpoint is huggingface_hub's (`HF_ENDPOINT`); `dry_run_dir` stops after step 4 and leaves the exact folder that
would have been uploaded there.
"""

import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .card import as_paths, build_model_card
from .evaluations import check_evaluation_kind, load_evaluation, match_evaluation
from .loading import check_loads_in_fresh_process
from .model_directory import HubPushError, ModelDirectory, inspect_model_directory, stage_upload_folder


logger = logging.getLogger(__name__)

_NO_TOKEN_MESSAGE = (
    "No Hugging Face token: log in with `hf auth login`, or pass one (`--token` / `token=`), or set HF_TOKEN. "
    "Use a token with write access to the repository's namespace; `--dry_run DIR` writes the upload folder without one."
)


def check_repo_id(repo_id: str) -> None:
    """Raises `HubPushError` if `repo_id` is not a valid model repository id (`namespace/name` or `name`)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not isinstance(repo_id, str):
        raise HubPushError(f"The repository id must be a string such as 'your-name/aligntok-f16d32', got {repo_id!r}.")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise HubPushError(
            f"{repo_id!r} is not a valid repository id ({error}). Use 'namespace/name', e.g. 'your-name/aligntok-f16d32': "
            "letters, digits, '-', '_' and '.', at most 96 characters."
        ) from None


def resolve_token(token: str | None) -> str:
    """`token`, else the one huggingface_hub finds (`HF_TOKEN`, the login cache); raises `HubPushError` if none."""
    from huggingface_hub import get_token

    resolved = token or get_token()
    if not resolved:
        raise HubPushError(_NO_TOKEN_MESSAGE)
    return resolved


def _destination_for_dry_run(dry_run_dir: str | os.PathLike, model: ModelDirectory) -> Path:
    destination = Path(dry_run_dir).expanduser().resolve()
    if destination == model.path or model.path in destination.parents:
        raise HubPushError(
            f"--dry_run {destination} is inside the model directory {model.path}; choose a folder outside it."
        )
    if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
        raise HubPushError(
            f"--dry_run {destination} exists and is not an empty directory; remove it or choose a new path."
        )
    destination.parent.mkdir(parents=True, exist_ok=True)
    return destination


def _staging_parent(model: ModelDirectory) -> Path | None:
    # Beside the model, so weights can be hard-linked (same file system); the system temp directory otherwise.
    return model.path.parent if os.access(model.path.parent, os.W_OK) else None


def push_to_hub(
    model_dir: str | os.PathLike,
    repo_id: str,
    *,
    evaluation_json: str | os.PathLike | Sequence[str | os.PathLike] = (),
    token: str | None = None,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    license: str = "apache-2.0",
    dry_run_dir: str | os.PathLike | None = None,
) -> str:
    """Uploads a trained model or pipeline directory with a model card rendered from its configs and evaluations.

    Args:
        model_dir: A `save_pretrained` directory: an `AlignedAutoencoderKL`, `LightningDiTTransformer2DModel` or
            `FluxTransformer2DModel` (`config.json`), or an `AlignTokDiTPipeline`, `AlignTokFluxPipeline` or
            `FluxPipeline` (`model_index.json`).
        repo_id (`str`): The model repository, `namespace/name`; created if it does not exist.
        evaluation_json: `results.json` files of our evaluations of this model (a pipeline may also take its
            tokenizer's); each must belong to the model, else nothing is uploaded.
        token (`str`, *optional*): A write token; default `HF_TOKEN` or the `hf auth login` cache.
        private (`bool`): Create the repository private. Pushing with `private=True` into an existing public
            repository is refused (it would publish the files).
        revision (`str`, *optional*): The branch to commit to; created from main if it does not exist.
        commit_message (`str`, *optional*): Default: "Upload <class> with its model card (diffusers-aligntok <version>)".
        license (`str`): The Hub license id written into the card (default `"apache-2.0"`).
        dry_run_dir (`str`, *optional*): Write the folder that would be uploaded (model files + `README.md`) here,
            after every check, and return its path without any network call. It must not exist or be empty.

    Returns:
        The repository URL, or the dry-run folder's path.

    Raises:
        `HubPushError` (a `ValueError`): bad repository id, no token, a directory without config or weights, one that
        does not load, an evaluation JSON of another model or of an unusable kind, a private push into a public repo.
    """
    from huggingface_hub import HfApi, constants

    import diffusers_aligntok

    check_repo_id(repo_id)
    if revision is not None and (not isinstance(revision, str) or not revision.strip()):
        raise HubPushError(f"revision must be a branch name such as 'v1' (or None for main), got {revision!r}.")
    resolved_token = None if dry_run_dir is not None else resolve_token(token)
    model = inspect_model_directory(model_dir)
    evaluations = [load_evaluation(path) for path in as_paths(evaluation_json)]
    for evaluation in evaluations:
        check_evaluation_kind(evaluation, model)
    # Tokenizer evaluations are tied to the model by paths and weights, so they are checked before the load check;
    # the others need the fingerprints it reports.
    matched_early = {
        index: match_evaluation(evaluation, model, None)
        for index, evaluation in enumerate(evaluations)
        if evaluation.kind == "tokenizer"
    }
    destination = _destination_for_dry_run(dry_run_dir, model) if dry_run_dir is not None else None

    staging = Path(
        tempfile.mkdtemp(
            prefix=".aligntok-push-", dir=destination.parent if destination is not None else _staging_parent(model)
        )
    )
    try:
        files = stage_upload_folder(model, staging)
        loaded = check_loads_in_fresh_process(staging, model)
        matched = [
            matched_early.get(index) or match_evaluation(evaluation, model, loaded["fingerprints"])
            for index, evaluation in enumerate(evaluations)
        ]
        card = build_model_card(model, repo_id, matched, license=license)
        (staging / "README.md").write_text(str(card), encoding="utf-8")
        logger.info(f"Upload folder for {repo_id}: README.md + {len(files)} files of {model.path}.")
        if destination is not None:
            if destination.exists():
                destination.rmdir()  # checked empty above
            os.replace(staging, destination)
            return str(destination)

        api = HfApi(endpoint=constants.ENDPOINT, token=resolved_token)
        repo_url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        full_repo_id = repo_url.repo_id or repo_id
        if private and api.repo_info(full_repo_id, repo_type="model").private is False:
            raise HubPushError(
                f"{full_repo_id} already exists and is public, so pushing with private=True would publish the model. "
                "Make the repository private on the Hub (settings) first, or push to a new repository id."
            )
        if revision is not None and revision != constants.DEFAULT_REVISION:
            api.create_branch(full_repo_id, branch=revision, exist_ok=True, repo_type="model")
        commit = api.upload_folder(
            repo_id=full_repo_id,
            folder_path=str(staging),
            repo_type="model",
            revision=revision,
            commit_message=commit_message
            or (
                f"Upload {model.class_name} with its model card (diffusers-aligntok {diffusers_aligntok.__version__})"
            ),
        )
        logger.info(f"Pushed {model.path} to {repo_url}: {getattr(commit, 'commit_url', commit)}")
        return str(repo_url)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
