# F-ViT with a frozen DeCLIP EVA02-B/16 on OV-LVIS at 1024 px, 48 epochs ("4x"), batch 64 (CLIPSelf's OV-LVIS B/16
# recipe; DeCLIP reports mask APr 26.8): a norm-carrying RPN, a class-agnostic mask head, matched low-quality RoIs,
# T_vlm 50, beta 0.6, background weight 0.9, class weights 1 for classes with training images (0 = rare = novel).
# Class names: the official LVIS v1 names, read from the annotation files (the head: the category-info json the
# converter writes from lvis_v1_train.json, also the class weights; the datasets check lvis_v1_*.json against the
# same names). mmdet's LVISV1Dataset list misspells label 654 ('speaker_(stereo_equipment)'; the files say
# 'speaker_(stero_equipment)'). Class embeddings: the file below or CLIPSelf's lvis_with_background_evaclip_vitb_16.pt.
#   python tools/dataset_converters/ov_lvis.py data/lvis_v1
#   python tools/dump_class_embeddings.py checkpoints/lvis_v1_eva02-b16_vild.pt --model-name EVA02-B-16 \
#       --pretrained merged2b_s8b_b131k --classes data/lvis_v1/annotations/lvis_v1_val.json
#   bash tools/dist_train.sh configs/detection/fvit_declip-eva02-b16_ov-lvis-1024_48e.py 8
#   python tools/test.py configs/detection/fvit_declip-eva02-b16_ov-lvis-1024_48e.py work_dirs/.../epoch_48.pth
# Checkpoints: every epoch, the last one kept (CLIPSelf: interval 1, max_keep_ckpts 1, save_last); report epoch 48.
# No save_best: lvis_v1_val.json is the test set, and selecting an epoch on it inflates the figure.
_base_ = [
    '../_base_/models/fvit_eva02_b16.py',
    '../_base_/datasets/ov_lvis.py',
    '../_base_/schedules/fvit_3e.py',
    '../_base_/mmdet_runtime.py',
]
model = dict(
    data_preprocessor=dict(pad_size_divisor={{_base_.image_size}}, pad_mask=True),
    rpn_head=dict(type='NormRPNHead', norm_cfg={{_base_.norm_cfg}}),
    roi_head=dict(
        bbox_head=dict(
            num_classes=1203,
            cls_predictor_cfg=dict(embeddings='checkpoints/lvis_v1_eva02-b16_vild.pt',
                                   class_names='data/lvis_v1/annotations/lvis_v1_train_cat_norare_info.json'),
            loss_cls=dict(class_weight='data/lvis_v1/annotations/lvis_v1_train_cat_norare_info.json', bg_weight=0.9),
            vlm_temperature=50.0, alpha=0.1, beta=0.6),
        mask_roi_extractor=dict(type='SingleRoIExtractor', roi_layer=dict(type='RoIAlign', output_size=14, sampling_ratio=0),
                                out_channels=256, featmap_strides=[4, 8, 16, 32]),
        mask_head=dict(type='FCNMaskHead', num_convs=4, in_channels=256, conv_out_channels=256, num_classes=1203,
                       class_agnostic=True, norm_cfg={{_base_.norm_cfg}},
                       loss_mask=dict(type='CrossEntropyLoss', use_mask=True, loss_weight=1.0))),
    train_cfg=dict(rcnn=dict(assigner=dict(match_low_quality=True), mask_size=28)),
    test_cfg=dict(rcnn=dict(score_thr=1e-4, nms=dict(type='nms', iou_threshold=0.5), max_per_img=300, mask_thr_binary=0.5)))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=250),
    dict(type='MultiStepLR', by_epoch=True, begin=0, end=48, milestones=[32, 44], gamma=0.1),
]
train_cfg = dict(max_epochs=48, val_interval=12)
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=1, save_last=True))
