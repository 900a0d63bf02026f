"""`push_to_hub` / `aligntok-push`: the dry-run folder, the upload against the local stand-in for the Hub API, and
bad inputs, each refused before any request reaches the Hub."""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard

from diffusers_aligntok.hub import HubPushError, push_to_hub
from diffusers_aligntok.hub.cli import main

from .hub_stand_in import StandInRepo


def _copy_run(run_dir: Path, destination: Path) -> Path:
    """A copy of a DiT / t2i run folder (the pipeline and the training files beside it)."""
    shutil.copytree(run_dir, destination)
    return destination


def test_cli_dry_run_writes_the_exact_upload_folder_and_it_loads(hub_assets, tmp_path, capsys):
    from diffusers_aligntok import AlignedAutoencoderKL

    folder = tmp_path / "upload"
    status = main(
        [
            str(hub_assets["tokenizer"]),
            "--repo_id",
            "me/tiny-aligntok",
            "--evaluation_json",
            str(hub_assets["tokenizer_json"]),
            "--license",
            "mit",
            "--dry_run",
            str(folder),
        ]
    )
    assert status == 0 and capsys.readouterr().out.strip() == str(folder)
    assert sorted(path.name for path in folder.iterdir()) == [
        "README.md",
        "config.json",
        "diffusion_pytorch_model.safetensors",
    ]
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".aligntok-push-")]  # staging cleaned up
    card = ModelCard.load(folder / "README.md")
    assert card.data.license == "mit" and card.data.library_name == "diffusers"
    loaded, original = (
        AlignedAutoencoderKL.from_pretrained(folder),
        AlignedAutoencoderKL.from_pretrained(hub_assets["tokenizer"]),
    )
    for (name, left), (_, right) in zip(loaded.state_dict().items(), original.state_dict().items(), strict=True):
        assert torch.equal(left, right), name


def test_upload_creates_the_repo_and_branch_and_commits_the_folder(hub_assets, local_hub, tmp_path):
    # A pipeline saved without `import diffusers_aligntok`: diffusers wrote the vae's full module path.
    run = _copy_run(hub_assets["dit_pipeline"].parent, tmp_path / "dit")
    index_path = run / "pipeline" / "model_index.json"
    index = json.loads(index_path.read_text())
    index["vae"] = ["diffusers_aligntok.models.autoencoder_aligned_kl", "AlignedAutoencoderKL"]
    index_path.write_text(json.dumps(index))

    url = push_to_hub(
        run / "pipeline",
        "me/tiny-dit",
        evaluation_json=[hub_assets["dit_json"]],
        token=local_hub.token,
        private=True,
        revision="v1",
        commit_message="Add the tiny DiT",
    )
    assert url == f"{local_hub.endpoint}/me/tiny-dit"
    repo = local_hub.repos["me/tiny-dit"]
    assert repo.private and sorted(repo.branches) == ["main", "v1"] and repo.files("main") == {}
    assert [(commit.branch, commit.message) for commit in repo.commits] == [("v1", "Add the tiny DiT")]
    uploaded = repo.files("v1")
    expected = sorted(
        path.relative_to(run / "pipeline").as_posix() for path in (run / "pipeline").rglob("*") if path.is_file()
    )
    assert sorted(uploaded) == sorted(expected + ["README.md"])
    for name in expected:
        if name.endswith(".safetensors"):
            assert uploaded[name] == (run / "pipeline" / name).read_bytes(), name
    assert json.loads(uploaded["model_index.json"])["vae"] == ["diffusers_aligntok", "AlignedAutoencoderKL"]
    card = ModelCard(uploaded["README.md"].decode())
    assert card.data.library_name == "diffusers" and card.data.pipeline_tag == "unconditional-image-generation"
    assert 'DiffusionPipeline.from_pretrained("me/tiny-dit")' in card.content
    paths = [path for _, path in local_hub.requests]
    assert (
        paths.index("/api/repos/create")
        < paths.index("/api/models/me/tiny-dit/branch/v1")
        < paths.index("/api/models/me/tiny-dit/commit/v1")
    )


def test_a_second_push_to_main_with_the_login_token_adds_a_commit(
    hub_assets, local_hub, load_check_in_process, monkeypatch
):
    monkeypatch.setenv("HF_TOKEN", local_hub.token)  # as `hf auth login` / HF_TOKEN provide it
    for _ in range(2):
        push_to_hub(hub_assets["tokenizer"], "me/tiny-aligntok", evaluation_json=hub_assets["tokenizer_json"])
    repo = local_hub.repos["me/tiny-aligntok"]
    assert not repo.private and [commit.branch for commit in repo.commits] == ["main", "main"]
    assert repo.commits[0].message.startswith("Upload AlignedAutoencoderKL with its model card")
    assert sorted(repo.files()) == ["README.md", "config.json", "diffusion_pytorch_model.safetensors"]


def test_a_private_push_into_an_existing_public_repo_is_refused(hub_assets, local_hub, load_check_in_process):
    local_hub.repos["me/public"] = StandInRepo(repo_id="me/public", private=False, heads={"main": "0" * 40})
    with pytest.raises(HubPushError, match="already exists and is public"):
        push_to_hub(hub_assets["tokenizer"], "me/public", token=local_hub.token, private=True)
    assert local_hub.repos["me/public"].commits == []


def test_a_generation_json_of_another_pipeline_is_refused_before_upload(hub_assets, local_hub, load_check_in_process):
    with pytest.raises(HubPushError) as error:
        push_to_hub(
            hub_assets["dit_pipeline"],
            "me/tiny-dit",
            evaluation_json=[hub_assets["other_dit_json"]],
            token=local_hub.token,
        )
    message = str(error.value)
    assert str(hub_assets["other_dit_json"]) in message and str(hub_assets["dit_pipeline"]) in message
    assert "fingerprints differ" in message and "transformer: evaluated" in message
    assert local_hub.requests == []


def test_a_directory_that_does_not_load_is_refused(hub_assets, local_hub, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(hub_assets["tokenizer"], model)
    config = json.loads((model / "config.json").read_text())
    config["latent_channels"] = 16  # the saved weights have 8: from_pretrained fails on the shapes
    (model / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        HubPushError, match="does not load with `import diffusers_aligntok; diffusers_aligntok.AlignedAutoencoderKL"
    ):
        push_to_hub(model, "me/broken", token=local_hub.token)
    assert local_hub.requests == []


def _without_weights(source: Path, destination: Path) -> Path:
    destination.mkdir()
    shutil.copy(source / "config.json", destination / "config.json")
    return destination


BAD_INPUTS = {
    "bad repo id": r"'not a/repo id' is not a valid repository id .* Use 'namespace/name'",
    "no token": r"No Hugging Face token: log in with `hf auth login`, or pass one \(`--token` / `token=`\), or set HF_TOKEN",
    "no weights": r"has config.json but no weights",
    "no config": r"has neither config.json \(a model\) nor model_index.json",
    "missing component": r"names a 'vae' component \(AlignedAutoencoderKL\) but .*vae does not exist",
    "json of another tokenizer": r"evaluated no tokenizer that is .*unevaluated/model",
    "json of another kind": r"is a text_to_image evaluation, but .* is a tokenizer",
    "not an evaluation json": r"is not a results.json of our evaluations",
    "retrained after the evaluation": r"weights were written after the evaluation JSON",
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs_fail_before_any_request(hub_assets, local_hub, tmp_path, case):
    model, repo_id, token, evaluations = hub_assets["tokenizer"], "me/tiny", local_hub.token, []
    if case == "bad repo id":
        repo_id = "not a/repo id"
    elif case == "no token":
        token = None  # and the fixture leaves no HF_TOKEN and no login cache
    elif case == "no weights":
        model = _without_weights(hub_assets["tokenizer"], tmp_path / "model")
    elif case == "no config":
        (tmp_path / "model").mkdir()
        shutil.copy(hub_assets["tokenizer"] / "diffusion_pytorch_model.safetensors", tmp_path / "model")
        model = tmp_path / "model"
    elif case == "missing component":
        model = _copy_run(hub_assets["dit_pipeline"].parent, tmp_path / "dit") / "pipeline"
        shutil.rmtree(model / "vae")
    elif case == "json of another tokenizer":
        model, evaluations = hub_assets["unevaluated"], [hub_assets["tokenizer_json"]]
    elif case == "json of another kind":
        evaluations = [hub_assets["t2i_json"]]
    elif case == "not an evaluation json":
        evaluations = [hub_assets["tokenizer"].parent / "metrics.json"]
    elif case == "retrained after the evaluation":
        evaluations = [tmp_path / "results.json"]
        shutil.copy2(hub_assets["tokenizer_json"], evaluations[0])
        written = (hub_assets["tokenizer"] / "diffusion_pytorch_model.safetensors").stat().st_mtime
        os.utime(evaluations[0], (written - 60, written - 60))  # the JSON predates the weights
    with pytest.raises(HubPushError, match=BAD_INPUTS[case]):
        push_to_hub(model, repo_id, evaluation_json=evaluations, token=token)
    assert local_hub.requests == []


def test_push_to_hub_from_a_training_run_reaches_the_hub(local_hub, load_check_in_process, tmp_path):
    """`train_stage.py --push_to_hub` on the tiny recipe: the final stage's tokenizer and its card arrive."""
    import sys

    import yaml

    repo_root = Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(repo_root / "training"))
    import train_stage

    raw = yaml.safe_load((repo_root / "training" / "configs" / "tiny_cpu.yaml").read_text())
    raw["common"]["training"].update({"max_train_steps": 2, "report_to": "none"})
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(raw))
    output_dir = tmp_path / "run"
    train_stage.main(
        [
            "--config",
            str(config),
            "--stage",
            "all",
            "--output_dir",
            str(output_dir),
            "--push_to_hub",
            "--hub_model_id",
            "stand-in-user/aligntok-tiny",
            "--hub_token",
            local_hub.token,
            "--hub_private_repo",
        ]
    )

    repo = local_hub.repos["stand-in-user/aligntok-tiny"]
    files = repo.files("main")
    assert repo.private
    assert files["config.json"] == (output_dir / "stage3" / "model" / "config.json").read_bytes()
    assert (
        files["diffusion_pytorch_model.safetensors"]
        == (output_dir / "stage3" / "model" / "diffusion_pytorch_model.safetensors").read_bytes()
    )
    card = ModelCard(files["README.md"].decode())
    assert card.data.library_name == "diffusers" and "aligntok" in card.data.tags
