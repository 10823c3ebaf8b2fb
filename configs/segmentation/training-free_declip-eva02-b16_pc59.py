# Training-free open-vocabulary segmentation, PASCAL Context val without background (59 classes): logit scale 40, background threshold 0.
#   python tools/test.py configs/segmentation/training-free_declip-eva02-b16_pc59.py declip_backbone_final.pth
_base_ = [
    '../_base_/models/training_free_eva02_b16.py',
    '../_base_/datasets/ov_seg/pc59.py',
    '../_base_/mmseg_runtime.py',
]
model = dict(class_names='pc59', logit_scale=40.0, bg_thresh=0.0)
