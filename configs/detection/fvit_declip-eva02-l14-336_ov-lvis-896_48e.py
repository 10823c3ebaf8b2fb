# F-ViT with a frozen DeCLIP EVA02-L/14-336 on OV-LVIS at 896 px (CLIPSelf's OV-LVIS L/14 recipe; DeCLIP reports mask
# APr 37.2): the B/16 LVIS recipe with the L/14 backbone, strides 3.5 ... 56, 768-d embeddings and beta 0.4.
_base_ = ['./fvit_declip-eva02-b16_ov-lvis-1024_48e.py']
image_size = 896
model = dict(
    data_preprocessor=dict(pad_size_divisor=image_size),
    backbone=dict(model_name='EVA02-L-14-336', pretrained='checkpoints/declip_eva02_l14_336.pth',
                  out_indices=(6, 10, 14, 23)),
    neck=[
        dict(type='SimplePyramid', in_channels=1024, norm_cfg={{_base_.norm_cfg}}),
        dict(type='FPN', in_channels=[1024] * 4, out_channels=256, num_outs=5, norm_cfg={{_base_.norm_cfg}}),
    ],
    rpn_head=dict(anchor_generator=dict(strides=[3.5, 7, 14, 28, 56])),
    roi_head=dict(
        bbox_roi_extractor=dict(featmap_strides=[3.5, 7, 14, 28]),
        mask_roi_extractor=dict(featmap_strides=[3.5, 7, 14, 28]),
        vlm_roi_extractor=dict(out_channels=768, featmap_strides=[14]),
        bbox_head=dict(fc_out_channels=768, beta=0.4,
                       cls_predictor_cfg=dict(embeddings='checkpoints/lvis_v1_eva02-l14-336_vild.pt'))))
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
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
