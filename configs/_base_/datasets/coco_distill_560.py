# DeCLIP distillation data: COCO train2017 images (labels unused), student 560 px, VFM 490 px, 224 px crops.
# Global batch 16 = 4 GPUs x 4 (scale batch_size to your GPUs, or use --auto-scale-lr).
train_dataloader = dict(
    batch_size=4,
    num_workers=8,
    persistent_workers=False,  # DeCLIPDistillHook sets the dataset epoch before each epoch
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='declip_distill_collate'),
    dataset=dict(
        type='DeCLIPDistillDataset',
        data_root='data/coco',
        img_dir='train2017',
        student_size=560,
        student_patch=16,
        vfm_patch=14,
        crop_size=224,
        sd_size=None,
        max_regions=20))
