# Open-vocabulary region classification on COCO panoptic val2017 (133 classes; METHOD.md section 5): the image
# at 1024 px (longest side), GT boxes of things and mask boxes of stuff pooled (RoIAlign 1x1) from the dense
# map; mean per-class top-1 / top-5 accuracy for things, stuff and all classes.
#   python tools/test.py configs/region_classification/region-cls_declip-eva02-b16_coco-panoptic-val2017.py \
#       declip_backbone_final.pth
# Masks instead of boxes: --cfg-options model.pooling=mask (the pipeline then reads the panoptic PNGs).
_base_ = ['../_base_/default_runtime.py']
image_size = 1024
model = dict(
    type='RegionClassifier',
    data_preprocessor=dict(type='ImgDataPreprocessor', mean=[122.771, 116.746, 104.094],
                           std=[68.501, 66.632, 70.323], bgr_to_rgb=True, pad_size_divisor=16),
    backbone=dict(type='DeCLIPViT', model_name='EVA02-B-16', pretrained='merged2b_s8b_b131k', mode=None,
                  attn_scale=None, trainable='none'),
    text_encoder=dict(type='OpenCLIPTextEncoder', model_name='EVA02-B-16', pretrained='merged2b_s8b_b131k',
                      templates='imagenet80', synonym_reduce='max'),
    class_names='coco_panoptic',
    pooling='box')
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadPanopticSegmentIds'),
    dict(type='Resize', scale=(image_size, image_size), keep_ratio=True),
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
        pipeline=test_pipeline,
        test_mode=True))
test_evaluator = dict(type='RegionClassificationMetric')
test_cfg = dict(type='TestLoop')
default_hooks = dict(checkpoint=None, logger=dict(type='LoggerHook', interval=100))
