"""Model cards rendered from tiny models and the real evaluations' JSONs: the metadata parses back with the JSON's
numbers, the sections carry the training configs' values and the protocol, and the usage code runs as written."""

import ast
import json
import re
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from diffusers_aligntok.hub import inspect_model_directory, render_model_card
from diffusers_aligntok.hub.card import TEMPLATES, template_text
from diffusers_aligntok.hub.model_directory import normalized_model_index

from .conftest import FOUNDATION_ENCODER, REPO_ROOT, load_json


def _parsed(card) -> dict:
    """The metadata as the Hub reads it back from the card's text."""
    return ModelCard(str(card)).data.to_dict()


def _metrics(metadata: dict) -> dict[str, float]:
    """`{metric name: value}` over the model-index."""
    return {
        metric["name"]: metric["value"]
        for result in metadata["model-index"][0]["results"]
        for metric in result["metrics"]
    }


def _usage_code(card) -> str:
    return re.search(r"```python\n(.*?)```", str(card), re.S).group(1)


def test_tokenizer_card_metadata_is_the_configs_and_the_json(hub_assets):
    results = load_json(hub_assets["tokenizer_json"])
    card = render_model_card(
        hub_assets["tokenizer"], "me/tiny-aligntok", evaluation_json=[hub_assets["tokenizer_json"]]
    )
    metadata = _parsed(card)
    assert metadata["library_name"] == "diffusers" and metadata["license"] == "apache-2.0"
    assert metadata["base_model"] == FOUNDATION_ENCODER  # stage 1's model.foundation_encoder
    assert metadata["pipeline_tag"] == "image-to-image"
    assert {"aligntok", "diffusers", "vae", "image-tokenizer", "arxiv:2509.25162"} <= set(metadata["tags"])
    assert "datasets" not in metadata  # builtin:shapes is no hub dataset
    this = results["tokenizers"][0]["metrics"]
    assert _metrics(metadata) == {
        "rFID (stand-in network: not rFID)": this["rfid"],
        "PSNR (dB)": this["psnr"],
        "SSIM": this["ssim"],
        "CKNNA": this["cknna"],
        "Linear probe top-1 accuracy (fraction)": this["linear_probe"]["top1"],
    }
    types = {metric["type"] for metric in metadata["model-index"][0]["results"][0]["metrics"]}
    assert "rfid-standin" in types and "rfid" not in types  # a stand-in's number never poses as an rFID
    assert metadata["model-index"][0]["name"] == "tiny-aligntok"

    text = str(card)
    # The stage table holds each stage's config values; the peer evaluated alongside is shown as such.
    assert "| 2 | encoder + adapter + decoder | stage-1 encoder + adapter (the L_sp target) |" in text
    assert "1 x L_sp (l2)" in text and "| 0.9 |" in text and "12.00 dB" in text  # w_sp, EMA decay, stage-2 PSNR
    assert "**tiny-aligntok** (this model)" in text and "model (compared)" in text
    assert "**Not comparable with published numbers**" in text and "num_samples=40 (published: 50000)" in text
    assert "eprint        = {2509.25162}" in text and "Aligning Visual Foundation Encoders to Tokenizers" in text
    assert "procedurally generated coloured shapes" in text  # the training data and its domain limits
    code = _usage_code(card)
    assert code.index("import diffusers_aligntok") < code.index('from_pretrained("me/tiny-aligntok")')


def test_class_conditional_pipeline_card_reports_every_cfg_row_and_its_protocol(hub_assets):
    results = load_json(hub_assets["dit_json"])
    card = render_model_card(
        hub_assets["dit_pipeline"],
        "me/tiny-dit",
        evaluation_json=[hub_assets["dit_json"], hub_assets["tokenizer_json"]],
    )
    metadata = _parsed(card)
    assert metadata["pipeline_tag"] == "unconditional-image-generation" and metadata["library_name"] == "diffusers"
    assert {"lightningdit", "class-conditional", "pipeline"} <= set(metadata["tags"])
    metrics = _metrics(metadata)
    for row in results["rows"]:
        scale = f"{row['guidance_scale']:g}"
        assert metrics[f"gFID (stand-in network: not gFID) (CFG {scale})"] == row["gfid"]
        assert (
            metrics[f"Inception Score (stand-in network: not Inception Score) (CFG {scale})"]
            == row["inception_score"]["mean"]
        )
        assert metrics[f"Precision (stand-in network: not Precision) (CFG {scale})"] == row["precision"]
    # The tokenizer's numbers are labelled as the vae/'s, not the pipeline's own.
    tokenizer = load_json(hub_assets["tokenizer_json"])["tokenizers"][0]["metrics"]
    assert metrics["Tokenizer (vae/) PSNR (dB)"] == tokenizer["psnr"]

    text = str(card)
    protocol = results["settings"]["protocol"]
    assert not protocol["adm_comparable"] and "**Not comparable with published numbers**" in text
    assert all(condition in text for condition in protocol["unmet"])
    assert "2 steps" in text and "`balanced` labels over 10 classes" in text
    # The DiT recipe (its training_config.json) and the tokenizer's stages (found through validation.tokenizer).
    assert (
        "| optimiser | AdamW lr 0.001, betas (0.9, 0.95)" in text
        and "| EMA decay (the saved weights) | 0.99 |" in text
    )
    assert "| steps | 200 |" in text and "#### The tokenizer" in text and "| 3 | decoder |" in text
    assert "**`vae/`** (this pipeline's tokenizer)" in text
    assert "guidance_scale=2," in _usage_code(card)  # the evaluation's best scale


def test_text_to_image_pipeline_card(hub_assets):
    results = load_json(hub_assets["t2i_json"])
    card = render_model_card(
        hub_assets["t2i_pipeline"], "me/tiny-t2i", evaluation_json=[hub_assets["t2i_json"]], license="mit"
    )
    metadata = _parsed(card)
    assert metadata["pipeline_tag"] == "text-to-image" and metadata["license"] == "mit"
    assert {"text-to-image", "flux", "aligntok-vae"} <= set(metadata["tags"])
    metrics = _metrics(metadata)
    row = results["rows"][0]
    assert metrics["gFID (stand-in network: not gFID) (CFG 2)"] == row["gfid"]
    assert metrics["CLIP score (stand-in network: not CLIP score) (CFG 2)"] == row["clip_score"]
    text = str(card)
    assert "tiny *random* text encoders" in text and "| pixels per token | 4 |" in text
    assert "Latents are fed with patch 1" in text and "**Not comparable with published numbers**" in text
    code = _usage_code(card)
    assert "true_cfg_scale=2," in code and "max_sequence_length=16," in code


def test_transformer_cards_are_matched_by_the_transformer_fingerprint(hub_assets):
    dit = _parsed(
        render_model_card(
            hub_assets["dit_transformer"], "me/tiny-dit-transformer", evaluation_json=[hub_assets["dit_json"]]
        )
    )
    assert "transformer" in dit["tags"] and dit["pipeline_tag"] == "unconditional-image-generation"
    assert len(dit["model-index"][0]["results"][0]["metrics"]) == 8  # gFID, IS, precision, recall at 2 scales
    flux = render_model_card(hub_assets["t2i_transformer"], "me/tiny-flux", evaluation_json=hub_assets["t2i_json"])
    assert _parsed(flux)["pipeline_tag"] == "text-to-image"
    assert 'FluxTransformer2DModel.from_pretrained("me/tiny-flux")' in _usage_code(flux)


def test_card_of_a_bare_model_says_what_is_unknown(tmp_path):
    from diffusers_aligntok import AlignedAutoencoderKL

    AlignedAutoencoderKL.from_preset("tiny").save_pretrained(tmp_path / "model")
    card = render_model_card(tmp_path / "model", "me/bare")
    metadata = _parsed(card)
    assert "model-index" not in metadata and "base_model" not in metadata
    assert "Recipe unknown" in str(card) and "No evaluation results were given" in str(card)


@pytest.mark.parametrize("name", ["tokenizer", "dit_pipeline", "dit_transformer", "t2i_pipeline"])
def test_usage_code_runs_as_written(hub_assets, name, tmp_path, monkeypatch):
    """The card's snippet, with the repository id replaced by the local directory it was rendered from."""
    evaluations = {"dit_pipeline": [hub_assets["dit_json"]], "t2i_pipeline": [hub_assets["t2i_json"]]}.get(name, [])
    card = render_model_card(hub_assets[name], "me/usage", evaluation_json=evaluations)
    code = _usage_code(card)
    ast.parse(code)
    monkeypatch.chdir(tmp_path)  # the snippets save sample.png
    exec(compile(code.replace('"me/usage"', json.dumps(str(hub_assets[name]))), f"{name} card", "exec"), {})
    if "pipeline" in name:
        assert (tmp_path / "sample.png").is_file()


def test_templates_ship_as_package_data():
    setup = (REPO_ROOT / "setup.py").read_text()
    assert '"diffusers_aligntok.hub": ["templates/*.md"]' in setup
    assert "aligntok-push=diffusers_aligntok.commands:push_to_hub" in setup  # its entry point: tests/test_commands.py
    for family, file_name in TEMPLATES.items():
        text = template_text(family)
        assert "{{ card_data }}" in text and "{{ usage_code }}" in text and "{{ evaluation_section }}" in text, (
            file_name
        )
    # model_cards/ at the root points to them instead of holding a second copy.
    assert (
        not list((REPO_ROOT / "model_cards").glob("*.md.j2")) and (REPO_ROOT / "model_cards" / "README.md").is_file()
    )


def test_package_import_does_not_import_the_hub_code():
    tree = ast.parse((REPO_ROOT / "diffusers_aligntok" / "__init__.py").read_text())
    imported = [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert not any(module == "hub" or module.startswith("hub.") for module in imported)


def test_model_index_names_our_library_by_its_top_level(hub_assets):
    index = {
        "_class_name": "AlignTokDiTPipeline",
        "vae": ["diffusers_aligntok.models.autoencoder_aligned_kl", "AlignedAutoencoderKL"],
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
    }
    fixed, changes = normalized_model_index(index)
    assert fixed["vae"] == ["diffusers_aligntok", "AlignedAutoencoderKL"] and fixed["scheduler"] == index["scheduler"]
    assert len(changes) == 1
    model = inspect_model_directory(hub_assets["dit_pipeline"])
    assert (
        model.kind == "class_conditional_pipeline"
        and model.tokenizer_dir == Path(hub_assets["dit_pipeline"]).resolve() / "vae"
    )
    assert model.component_configs["scheduler"]["_class_name"] == "FlowMatchEulerDiscreteScheduler"
