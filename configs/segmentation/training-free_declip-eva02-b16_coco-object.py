# Training-free open-vocabulary segmentation, COCO-Object val2017 (background + 80 things): logit scale 40, background threshold 0.2.
#   python tools/test.py configs/segmentation/training-free_declip-eva02-b16_coco-object.py declip_backbone_final.pth
_base_ = [
    '../_base_/models/training_free_eva02_b16.py',
    '../_base_/datasets/ov_seg/coco_object.py',
    '../_base_/mmseg_runtime.py',
]
model = dict(class_names='coco_object', logit_scale=40.0, bg_thresh=0.2)
