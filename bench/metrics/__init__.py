"""Image metrics: FID/KID (`fid`, torchmetrics on torch-fidelity's InceptionV3) and CLIP score
(`clip_score`, open_clip). Weights are resolved by `bench.weights` and never downloaded."""
