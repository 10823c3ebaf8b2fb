# METHOD.md section 4: AdamW 1e-5, wd 0.1 (none on 1-D parameters), 6 epochs, linear warm-up 1000 iterations
# then cosine decay per iteration, total batch 16, mixed precision.
optim_wrapper = dict(
    type='AmpOptimWrapper',
    loss_scale='dynamic',
    optimizer=dict(type='AdamW', lr=1e-5, weight_decay=0.1, betas=(0.9, 0.999), eps=1e-8),
    paramwise_cfg=dict(flat_decay_mult=0.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=1000),
    dict(type='CosineAnnealingLR', T_max=6, by_epoch=True, begin=0, end=6, convert_to_iter_based=True, eta_min=0.0),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=6)
auto_scale_lr = dict(enable=False, base_batch_size=16)
