# DeCLIP distillation in the proof world (docs/proof.md): the tiny CLIP pretrained on the world's
# image-caption pairs is the student (and, frozen, the CLIP teacher); the tiny self-supervised ViT pretrained
# on the world's images (labels and captions unseen) is the VFM teacher. No diffusion teacher.
#
# The world-dependent keys (student weights, VFM teacher, data root, seed) are placeholders that
# projects/proof_world/proof_world/ablation.py (projects/proof_world/tools/run_ablation.py, `make demo`) fills in from the pretraining outputs
# (projects/proof_world/proof_world/pretrain.py) and runs through declip_mm.engine.runner_setup.build_runner, as tools/train.py
# does; every run's work dir holds run.json with the equivalent tools/train.py command line.
#
# Short schedule for 2 CPU cores (tens of seconds per run): the loop, losses, hook and export are the
# paper's; lr, iterations and batch are scaled to a 96-wide, 4-block CLIP trained for minutes.
_base_ = [
    '../../../../configs/_base_/models/declip_eva02_b16_dinov2_b14reg.py',
    '../../../../configs/_base_/datasets/coco_distill_560.py',
    '../../../../configs/_base_/default_runtime.py',
]
custom_imports = dict(imports=['declip_mm', 'projects.proof_world.proof_world'], allow_failed_imports=False)
model = dict(
    student=dict(model_name='DeCLIP-Proof-ViT-8', pretrained=None, mode='csa', attn_scale='1/sqrt(d)',
                 trainable='blocks', input_size=128),
    # pretrain_vfm's VFMTeacher config: a tiny DINOv2-architecture ViT (4 registers, 8 px patches) and its
    # weights file (checkpoint set by the ablation)
    vfm_teacher=dict(type='VFMTeacher', arch='dinov2_vits14_reg', checkpoint=None, dtype='fp32',
                     model_kwargs=dict(img_size=96, patch_size=8, embed_dim=64, depth=4, num_heads=2,
                                       init_values=0.1)),
    diffusion_teacher=None,
    context_loss=dict(type='ContextDistillLoss', kind='kl', tau_t=0.1, tau_s=0.1, loss_weight=0.25),
    content_loss=dict(type='ContentDistillLoss', pooling='weighted', loss_weight=1.0),
    rcc_loss=None,
    context_features='context',
    region_cells=4)
train_dataloader = dict(
    batch_size=4, num_workers=0, sampler=dict(type='InfiniteSampler', shuffle=True),
    # the world's train images (labels and captions unused); sizes follow the world CLIP (set by the ablation)
    dataset=dict(data_root='data/proof_world', img_dir='train/images', ann_file=None, student_size=128,
                 student_patch=8, vfm_patch=8, crop_size=96, sd_size=None, max_regions=6))
custom_hooks = [dict(type='DeCLIPDistillHook', alpha=0.7, export_interval=0)]
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, weight_decay=0.1, betas=(0.9, 0.98), eps=1e-6),
    paramwise_cfg=dict(flat_decay_mult=0.0))
# iteration-based: a short run sees part of the world once (the grid draws of epoch 0). The ablation keeps the
# cosine's end at train_cfg.max_iters whatever --cfg-options sets.
param_scheduler = [dict(type='WarmupCosineLR', warmup_iters=10, by_epoch=False, begin=0, end=80)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=80)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
default_hooks = dict(logger=dict(type='LoggerHook', interval=5),
                     checkpoint=dict(type='CheckpointHook', interval=100000, by_epoch=False, save_last=False))
log_processor = dict(window_size=1, by_epoch=False)
