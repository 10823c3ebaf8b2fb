# Training-free open-vocabulary segmentation, Cityscapes val (19 classes), short side 560: logit scale 40, background threshold 0.
#   python tools/test.py configs/segmentation/training-free_declip-eva02-b16_cityscapes.py declip_backbone_final.pth
_base_ = [
    '../_base_/models/training_free_eva02_b16.py',
    '../_base_/datasets/ov_seg/cityscapes.py',
    '../_base_/mmseg_runtime.py',
]
model = dict(class_names='cityscapes', logit_scale=40.0, bg_thresh=0.0)
