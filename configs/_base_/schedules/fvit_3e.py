# F-ViT OV-COCO schedule (CLIPSelf configs; docs/detection.md): AdamW 1e-4, wd 0.1 on every parameter (the learned
# temperature too), grad clip 1.0, fp16 with a static loss scale of 512, warm-up 250 iterations from 0.001x, no decay
# within the 3 epochs (step at epoch 100: "do not decrease lr to avoid overfitting to base"), batch 64 = 8 x 8 with
# the lr scaled linearly to the real batch; evaluated every epoch (the best is usually epoch 2).
optim_wrapper = dict(
    type='AmpOptimWrapper', loss_scale=512.0,
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.1),
    clip_grad=dict(max_norm=1.0, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=250),
    dict(type='MultiStepLR', by_epoch=True, begin=0, end=3, milestones=[100], gamma=0.1),
]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=3, val_interval=1)
val_cfg = dict(type='ValLoop', fp16=True)
test_cfg = dict(type='TestLoop', fp16=True)
auto_scale_lr = dict(enable=True, base_batch_size=64)
