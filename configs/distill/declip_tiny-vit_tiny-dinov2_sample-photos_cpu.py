# A tiny CPU run on the real sample photos (tools/fetch_sample_data.py): random tiny OpenAI-style student
# (DeCLIP-Tiny-ViT-16), random tiny DINOv2-reg-style teacher, no diffusion teacher; 6 epochs of 5 iterations,
# about 10 s on 2 cores. It proves the pipeline and the optimisation: every loss term goes down (tested).
# The features it learns mean nothing. Unlike the paper (0.25 / 1.0 / 0.05), the three loss weights are
# equal: random towers start with nearly uniform attention, the content loss alone would collapse the dense
# map, and the region-correlation term needs a real weight to hold it.
_base_ = [
    '../_base_/models/declip_eva02_b16_dinov2_b14reg.py',
    '../_base_/datasets/coco_distill_560.py',
    '../_base_/default_runtime.py',
]
model = dict(
    student=dict(model_name='DeCLIP-Tiny-ViT-16', pretrained=None, input_size=224),
    vfm_teacher=dict(arch='dinov2_vits14_reg', checkpoint=None,
                     model_kwargs=dict(embed_dim=48, depth=2, num_heads=3)),
    diffusion_teacher=None,
    context_loss=dict(loss_weight=1.0),
    rcc_loss=dict(loss_weight=1.0),
    region_cells=2)
train_dataloader = dict(
    batch_size=2, num_workers=0,
    dataset=dict(data_root='data/sample', img_dir='photos', student_size=224, crop_size=224, max_regions=8))
# fused AdamW, as the paper schedule (configs/_base_/schedules/distill_6e.py says why)
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.1, fused=True),
                     paramwise_cfg=dict(flat_decay_mult=0.0))
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=5)]
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=6)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
default_hooks = dict(logger=dict(type='LoggerHook', interval=1), checkpoint=dict(type='CheckpointHook', interval=1))
log_processor = dict(window_size=1)
