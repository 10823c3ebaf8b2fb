# Region classification at CLIPSelf's resolution (1024 for B/16; CLIPSelf's scripts/test_eva_vitb16_macc_boxes_masks.sh),
# otherwise the protocol of the 560 config (the authors' DeCLIP code evaluates at 560). Pooling stays DeCLIP's: raw
# tokens (CLIPSelf's own EVA code L2-normalises every token before pooling).
_base_ = ['./region-cls_declip-eva02-b16_coco-panoptic-val2017-560.py']
image_size = 1024
test_pipeline = [
    dict(type='LoadImageFromFile', imdecode_backend='pillow', color_type='color_ignore_orientation'),
    dict(type='LoadPanopticSegmentIds'),
    dict(type='PanopticRegionBoxes', min_area=8 ** 2),
    dict(type='ResizeLongestPad', size=image_size),
    dict(type='PackRegionInputs'),
]
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
