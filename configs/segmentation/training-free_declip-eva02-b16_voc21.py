# Training-free open-vocabulary segmentation, PASCAL VOC 2012 val with background (21 classes): logit scale 80, background threshold 0.4.
#   python tools/test.py configs/segmentation/training-free_declip-eva02-b16_voc21.py declip_backbone_final.pth
_base_ = [
    '../_base_/models/training_free_eva02_b16.py',
    '../_base_/datasets/ov_seg/voc21.py',
    '../_base_/mmseg_runtime.py',
]
model = dict(class_names='voc21', logit_scale=80.0, bg_thresh=0.4)
