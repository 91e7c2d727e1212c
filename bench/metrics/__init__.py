"""Image metrics from stored features.

    networks    the registry of feature networks (inception, clip, dinov2; plugins add theirs)
    backbones   the clip (open_clip image embeddings) and dinov2 (transformers) networks
    fid         FID/KID with torchmetrics on torch-fidelity's InceptionV3
    frechet     the exact Fréchet distance through symmetric eigendecompositions
    resample    the prompt bootstrap, paired differences, FID∞
    cmmd, prdc  CMMD and precision/recall/density/coverage, blocked, with bootstrap replicates
    suite       what `--metrics` asks for, and every metric's columns and intervals
    clip_score  CLIP score (open_clip, or a scorer a plugin registered)

Weights are resolved from local files and caches (`bench.weights`) and never downloaded.
"""
