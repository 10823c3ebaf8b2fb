# docs/method.md section 5: AdamW 1e-5, wd 0.1 (none on 1-D parameters), 6 epochs, total batch 16, mixed precision.
# Schedule = the authors' `cosine_lr` (open_clip): linear warm-up over the first 1000 iterations
# (lr = base * (s + 1) / 1000), then cosine from base to 0 over the remaining iterations (WarmupCosineLR).
# AdamW betas / eps: (0.9, 0.999) / 1e-8 for EVA students; OpenAI-CLIP ('vit') students override them with
# (0.9, 0.98) / 1e-6, the authors' defaults for that model family (see configs/distill/*vit-*.py).
# fused=True: torch's one-kernel AdamW (CPU and CUDA; it takes AMP's loss scale itself) instead of the per-tensor
# loop, which was ~12 % of a distillation iteration on the CPU (docs/benchmarks.md, "Profiles"); same update up to
# rounding (tests/engine/test_fused_adamw.py: 4.5e-8 after 3 steps).
optim_wrapper = dict(
    type='AmpOptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-5, weight_decay=0.1, betas=(0.9, 0.999), eps=1e-8, fused=True),
    paramwise_cfg=dict(flat_decay_mult=0.0))
param_scheduler = [
    dict(type='WarmupCosineLR', warmup_iters=1000, by_epoch=True, begin=0, end=6, convert_to_iter_based=True),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=6)
auto_scale_lr = dict(enable=False, base_batch_size=16)
