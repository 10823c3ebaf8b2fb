# Training-free open-vocabulary segmentation, PASCAL VOC 2012 val without background (20 classes): logit scale 40, background threshold 0.
#   python tools/test.py configs/segmentation/training-free_declip-eva02-b16_voc20.py declip_backbone_final.pth
_base_ = [
    '../_base_/models/training_free_eva02_b16.py',
    '../_base_/datasets/ov_seg/voc20.py',
    '../_base_/mmseg_runtime.py',
]
model = dict(class_names='voc20', logit_scale=40.0, bg_thresh=0.0)
