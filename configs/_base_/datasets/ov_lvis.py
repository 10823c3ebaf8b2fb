# OV-LVIS (as CLIPSelf F-ViT; docs/detection.md): LVIS v1, 1203 classes; the 337 rare classes are novel (their training
# annotations removed), the 866 common + frequent are base. Training: annotations/lvis_v1_train_base.json and the class
# weights from annotations/lvis_v1_train_cat_norare_info.json (tools/dataset_converters/ov_lvis.py); evaluation:
# lvis_v1_val.json with the official lvis API (mmdet's LVISMetric as OVLVISMetric, which runs with numpy 2; mask APr is
# the headline). No repeat-factor sampling. Classes: the official LVIS v1 names (mmdet's list misspells one);
# OVLVISV1Dataset refuses an annotation file whose categories are not those, in id order.
dataset_type = 'OVLVISV1Dataset'
data_root = 'data/lvis_v1/'
image_size = 1024
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomResize', scale=(image_size, image_size), ratio_range=(0.1, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_type='absolute_range', crop_size=(image_size, image_size), recompute_bbox=True,
         allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(image_size, image_size), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=8, num_workers=8, persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(type=dataset_type, data_root=data_root, ann_file='annotations/lvis_v1_train_base.json',
                 data_prefix=dict(img=''), filter_cfg=dict(filter_empty_gt=True, min_size=32),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=4, persistent_workers=True, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, ann_file='annotations/lvis_v1_val.json',
                 data_prefix=dict(img=''), test_mode=True, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='OVLVISMetric', ann_file=data_root + 'annotations/lvis_v1_val.json', metric=['bbox', 'segm'])
test_evaluator = val_evaluator
