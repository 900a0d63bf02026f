"""The installed console scripts (`setup.py` `console_scripts`): one function per command.

Each command's `main(argv)` lives beside the code it drives and returns its result to Python callers (the results
dictionary, the output folder). setuptools' generated script calls `sys.exit(entry_point())`, which would print such a
value and exit with status 1, so every entry point here runs its `main` and returns an exit status instead. The imports
sit inside the functions so that `aligntok-* --help` does not import torch, diffusers and the metric stack it does not
use.
"""


def demo() -> int:
    """`aligntok-demo`: the whole method end to end on the built-in data set (see `diffusers_aligntok.demo`)."""
    from .demo import main

    main()
    return 0


def evaluate_tokenizer() -> int:
    """`aligntok-evaluate-tokenizer`: rFID, PSNR, SSIM, LPIPS, linear probe and CKNNA of tokenizers side by side."""
    from .evaluation.tokenizer_cli import main

    main()
    return 0


def evaluate_generation() -> int:
    """`aligntok-evaluate-generation`: gFID, IS, precision and recall of a class-conditional DiT pipeline."""
    from .evaluation.class_conditional_cli import main

    main()
    return 0


def evaluate_t2i() -> int:
    """`aligntok-evaluate-t2i`: gFID against a reference folder, CLIP score and GenEval export of a T2I pipeline."""
    from .evaluation.text_to_image_cli import main

    main()
    return 0


def compute_latent_statistics() -> int:
    """`aligntok-latent-statistics`: a tokenizer's latent mean/std over a data set, optionally written to its config."""
    from .evaluation.latent_statistics_cli import main

    main()
    return 0


def cache_latents() -> int:
    """`aligntok-cache-latents`: encode a data set once into the latent cache that DiT training reads."""
    from .training.dit.latent_cache import main

    main()
    return 0


def convert_lightningdit() -> int:
    """`aligntok-convert-lightningdit`: a LightningDiT checkpoint as a diffusers transformer folder."""
    from .conversion.lightningdit_cli import main

    main()
    return 0


def push_to_hub() -> int:
    """`aligntok-push`: a trained tokenizer or pipeline to the Hub with its model card; its own exit status."""
    from .hub.cli import main

    return main()
