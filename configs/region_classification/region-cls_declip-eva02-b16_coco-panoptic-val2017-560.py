# Open-vocabulary region classification on COCO panoptic val2017 (133 classes; docs/evaluation.md), the protocol
# of the authors' zero_shot.py (DeCLIP main @2c0b3de; docs/evaluation.md has the table): the image's longest
# side resized to 560 (PIL bicubic) and padded right/bottom with black; every segment of segments_info (crowd
# included, the first 100, boxes of w*h < 64 skipped); thing boxes from the annotation, stuff boxes from the
# mask; the raw dense map pooled (RoIAlign 1x1, or the mask mean with model.pooling=mask); one text embedding
# per raw panoptic name from the 63 ViLD-style prompts; mean per-class top-1 / top-5 for things and stuff.
#   python tools/test.py configs/region_classification/region-cls_declip-eva02-b16_coco-panoptic-val2017-560.py \
#       declip_backbone_final.pth
# CLIPSelf's resolution (1024): region-cls_declip-eva02-b16_coco-panoptic-val2017-1024.py.
# Dense mode (both poolings): model.mode, else the backbone's, else the mode the checkpoint stores, else the authors'
# 'qq' (zero_shot.py with --mode qq_vfm_distill), which a weights file without a stored mode (the authors' .pt, an
# open_clip file) also runs at attn_scale 1.0 as theirs. Weights distilled in csa (the released DeCLIP_*_csa_* files):
#   --cfg-options model.mode=csa
_base_ = ['../_base_/default_runtime.py']
image_size = 560
model = dict(
    type='RegionClassifier',
    # mean / std: declip_mm.constants.CLIP_MEAN_255_ROUNDED / CLIP_STD_255_ROUNDED (the authors' configs)
    data_preprocessor=dict(type='ImgDataPreprocessor', mean=[122.771, 116.746, 104.094],
                           std=[68.501, 66.632, 70.323], bgr_to_rgb=True, pad_size_divisor=1),
    backbone=dict(type='DeCLIPViT', model_name='EVA02-B-16', pretrained='merged2b_s8b_b131k', mode=None,
                  attn_scale=None, trainable='none'),
    text_encoder=dict(type='OpenCLIPTextEncoder', model_name='EVA02-B-16', pretrained='merged2b_s8b_b131k',
                      templates='vild'),
    class_names='coco_panoptic',
    pooling='box',
    mode=None)
test_pipeline = [
    dict(type='LoadImageFromFile', imdecode_backend='pillow', color_type='color_ignore_orientation'),
    dict(type='LoadPanopticSegmentIds'),
    dict(type='PanopticRegionBoxes', min_area=8 ** 2),
    dict(type='ResizeLongestPad', size=image_size),
    dict(type='PackRegionInputs'),
]
test_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='pseudo_collate'),
    dataset=dict(
        type='COCOPanopticRegionDataset',
        data_root='data/coco',
        ann_file='annotations/panoptic_val2017.json',
        data_prefix=dict(img='val2017/', seg='annotations/panoptic_val2017/'),
        max_segments=100,
        pipeline=test_pipeline,
        test_mode=True))
test_evaluator = dict(type='RegionClassificationMetric')
test_cfg = dict(type='TestLoop')
default_hooks = dict(checkpoint=None, logger=dict(type='LoggerHook', interval=100))
