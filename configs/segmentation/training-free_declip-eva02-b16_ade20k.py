# Training-free open-vocabulary segmentation, ADE20K val (150 classes): logit scale 40, background threshold 0.
#   python tools/test.py configs/segmentation/training-free_declip-eva02-b16_ade20k.py declip_backbone_final.pth
_base_ = [
    '../_base_/models/training_free_eva02_b16.py',
    '../_base_/datasets/ov_seg/ade20k.py',
    '../_base_/mmseg_runtime.py',
]
model = dict(class_names='ade20k', logit_scale=40.0, bg_thresh=0.0)
