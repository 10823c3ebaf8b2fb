# The paper setting, validated after every epoch by training-free segmentation on PASCAL VOC 2012 val (VOC21
# protocol) with the student as backbone. DeCLIPDistillHook swaps in the weight-space ensemble for validation.
_base_ = [
    './declip_eva02-b16_dinov2-b14reg_sd15_coco-560_6e.py',
    '../_base_/datasets/ov_seg/voc21.py',
]
model = dict(
    # mean / std: declip_mm.constants.CLIP_MEAN_255_ROUNDED / CLIP_STD_255_ROUNDED (the authors' configs)
    data_preprocessor=dict(eval_preprocessor=dict(
        type='mmseg.SegDataPreProcessor', mean=[122.771, 116.746, 104.094], std=[68.501, 66.632, 70.323],
        bgr_to_rgb=True, pad_val=0, seg_pad_val=255)),
    val_segmentor=dict(
        text_encoder=dict(type='OpenCLIPTextEncoder', model_name='EVA02-B-16', pretrained='merged2b_s8b_b131k'),
        class_names='voc21', logit_scale=80.0, bg_thresh=0.4,
        test_cfg=dict(mode='slide', crop_size=(336, 336), stride=(112, 112))))
# the dataset base is written for mmseg's scope; name its types explicitly under declip_mm's
val_dataloader = dict(dataset=dict(type='mmseg.PascalVOCDataset', pipeline=[
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(4096, 448), keep_ratio=True),
    dict(type='mmseg.LoadAnnotations'),
    dict(type='mmseg.PackSegInputs'),
]))
test_dataloader = val_dataloader
val_evaluator = dict(type='mmseg.IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
train_cfg = dict(val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
