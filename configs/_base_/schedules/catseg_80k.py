# CAT-Seg's solver (configs/config.yaml + vitb_384.yaml; docs/catseg.md): AdamW 2e-4, weight decay 1e-4 (0 on norm
# layers), the CLIP towers at lr x 0.01, cosine from 2e-4 to 0 over 80k iterations without warm-up, batch 4 (4 GPUs x 1),
# full-model gradient clipping at L2 norm 0.01, fp32.
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, weight_decay=1e-4),
    clip_grad=dict(max_norm=0.01, norm_type=2),
    paramwise_cfg=dict(norm_decay_mult=0.0,
                       custom_keys={'backbone.': dict(lr_mult=0.01), 'text_encoder.': dict(lr_mult=0.01)}))
param_scheduler = [dict(type='CosineAnnealingLR', T_max=80000, eta_min=0.0, by_epoch=False, begin=0, end=80000)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=80000, val_interval=5000)
