from setuptools import find_packages, setup


# torch and torchvision: compatible ranges for users; .ci/run pins the pair that exists on the CI machines.
INSTALL_REQUIRES = [
    "torch>=2.4",
    "diffusers>=0.36",
    "transformers>=5.0",
    "accelerate>=1.0",
    "huggingface_hub>=1.0",
    "safetensors>=0.4",
    "numpy",
    "pillow",
    "jinja2",  # model-card templates (huggingface_hub's ModelCard.from_template renders with it)
]
EXTRAS = {
    # Everything `training/` needs: data loading, LoRA, the perceptual loss, logging.
    "training": ["datasets>=3.0", "peft>=0.15", "lpips>=0.1.4", "torchvision>=0.19", "tensorboard", "tqdm", "pyyaml"],
    "evaluation": ["clean-fid>=0.1.35", "lpips>=0.1.4", "torchvision>=0.19", "datasets>=3.0", "scipy", "scikit-learn"],
    "wandb": ["wandb"],
}
# The demo trains the tokenizer and DiT and measures the latent's linear-probe accuracy.
EXTRAS["demo"] = sorted({*EXTRAS["training"], "scikit-learn"})
EXTRAS["dev"] = sorted(
    {
        *EXTRAS["training"],
        *EXTRAS["evaluation"],
        "pytest>=8",
        "pytest-xdist",
        "ruff==0.17.6",
        "sentencepiece",
        "protobuf",
    }
)

setup(
    name="diffusers-aligntok",
    version="0.1.0.dev0",
    description="AlignTok image tokenizers (DINOv2 aligned to a latent-diffusion VAE) as a Hugging Face diffusers plugin",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    packages=find_packages(include=["diffusers_aligntok", "diffusers_aligntok.*"]),
    # Files the library reads at run time ship inside the package, so a wheel install has them.
    package_data={"diffusers_aligntok": ["configs/*.yaml"], "diffusers_aligntok.hub": ["templates/*.md"]},
    python_requires=">=3.10",
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={
        "console_scripts": [
            "aligntok-demo=diffusers_aligntok.commands:demo",
            "aligntok-evaluate-tokenizer=diffusers_aligntok.commands:evaluate_tokenizer",
            "aligntok-evaluate-generation=diffusers_aligntok.commands:evaluate_generation",
            "aligntok-evaluate-t2i=diffusers_aligntok.commands:evaluate_t2i",
            "aligntok-latent-statistics=diffusers_aligntok.commands:compute_latent_statistics",
            "aligntok-cache-latents=diffusers_aligntok.commands:cache_latents",
            "aligntok-convert-lightningdit=diffusers_aligntok.commands:convert_lightningdit",
            "aligntok-push=diffusers_aligntok.commands:push_to_hub",
        ]
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "License :: OSI Approved :: Apache Software License",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
