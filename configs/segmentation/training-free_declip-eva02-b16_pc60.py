# Training-free open-vocabulary segmentation, PASCAL Context val with background (60 classes): logit scale 40, background threshold 0.15.
#   python tools/test.py configs/segmentation/training-free_declip-eva02-b16_pc60.py declip_backbone_final.pth
_base_ = [
    '../_base_/models/training_free_eva02_b16.py',
    '../_base_/datasets/ov_seg/pc60.py',
    '../_base_/mmseg_runtime.py',
]
model = dict(class_names='pc60', logit_scale=40.0, bg_thresh=0.15)
