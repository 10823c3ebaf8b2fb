# F-ViT with a frozen DeCLIP EVA02-L/14-336 on OV-COCO at 896 px (64 x 64 tokens), 3 epochs, batch 64 (CLIPSelf's
# OV-COCO L/14 recipe; DeCLIP reports novel AP50 46.2): taps after blocks 6, 10, 14 and the decoupled block 23,
# strides 3.5 / 7 / 14 / 28 (/ 56 for the RPN), 768-d class embeddings.
_base_ = ['./fvit_declip-eva02-b16_ov-coco-640_3e.py']
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
        vlm_roi_extractor=dict(out_channels=768, featmap_strides=[14]),
        bbox_head=dict(fc_out_channels=768,
                       cls_predictor_cfg=dict(embeddings='checkpoints/ov_coco_65_eva02-l14-336_vild.pt'))))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
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
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
