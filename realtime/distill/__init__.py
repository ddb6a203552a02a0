"""Few-step distillation of LatentSync's UNet (`syncvid prepare-data`, `syncvid distill`; docs/distill.md).

- ``data``: the prepared-data layout and random training windows of it;
- ``prepare``: talking-face videos -> that layout (face track, VAE latents, offline and streaming features);
- ``trajectory``: the distillation objective (student DDIM steps onto the guided teacher's trajectory);
- ``train``: the loop with checkpoints, resume, progress bar and JSONL loss log;
- ``teacher``, ``synthetic``, ``evaluate``, ``experiment``: the CPU proof on a tiny synthetic teacher.
"""
