# F-ViT (CLIPSelf F-ViT/configs/ov_coco/fvit_vitb16_upsample_fpn_bs64_3e_ovcoco_eva_original.py @1c7fe9c;
# docs/detection.md) with a frozen DeCLIP EVA02-B/16: taps after blocks 3, 5, 7 and the decoupled last block (csa, s=1:
# the authors' released checkpoints; DeCLIP issue #10's recipe feeds that output to pyramid level 4), simple pyramid,
# FPN, RPN, the text-embedding RoI head fused with CLIP region scores at test. The dataset config sets the classes,
# the class-embedding file and the fusion settings.
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    type='FViT',
    # ImageNet mean/std into EVA-CLIP, as CLIPSelf's F-ViT (not the CLIP statistics); padded after normalisation
    # (declip_mm.constants.IMAGENET_MEAN_255 / IMAGENET_STD_255)
    data_preprocessor=dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375],
                           bgr_to_rgb=True, pad_size_divisor=640),
    backbone=dict(type='DeCLIPViT', model_name='EVA02-B-16', pretrained='checkpoints/declip_eva02_b16.pth',
                  mode='csa', attn_scale=1.0, out_indices=(3, 5, 7, 11), trainable='none', last_tap_mode=None),
    neck=[
        dict(type='SimplePyramid', in_channels=768, norm_cfg=norm_cfg),
        dict(type='FPN', in_channels=[768] * 4, out_channels=256, num_outs=5, norm_cfg=norm_cfg),
    ],
    rpn_head=dict(
        type='RPNHead', in_channels=256, feat_channels=256, num_convs=2,
        anchor_generator=dict(type='AnchorGenerator', scales=[8], ratios=[0.5, 1.0, 2.0], strides=[4, 8, 16, 32, 64]),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0] * 4, target_stds=[1.0] * 4),
        loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
    roi_head=dict(
        type='FViTRoIHead',
        bbox_roi_extractor=dict(type='SingleRoIExtractor', roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0),
                                out_channels=256, featmap_strides=[4, 8, 16, 32]),
        vlm_roi_extractor=dict(type='SingleRoIExtractor', roi_layer=dict(type='RoIAlign', output_size=1, sampling_ratio=0),
                               out_channels=512, featmap_strides=[16]),
        bbox_head=dict(
            type='FViTBBoxHead', in_channels=256, conv_out_channels=256, fc_out_channels=512, roi_feat_size=7,
            num_classes=None,                         # the dataset config's
            norm_cfg=norm_cfg, reg_class_agnostic=True,
            bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0] * 4, target_stds=[0.1, 0.1, 0.2, 0.2]),
            cls_predictor_cfg=dict(type='TextEmbeddingClassifier', embeddings=None, class_names=None,
                                   temperature=50.0, learn_temperature=True),
            loss_cls=dict(type='OVCrossEntropyLoss', class_weight=None, loss_weight=1.0),
            loss_bbox=dict(type='L1Loss', loss_weight=1.0),
            vlm_temperature=75.0, alpha=0.1, beta=0.8)),
    train_cfg=dict(
        rpn=dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.7, neg_iou_thr=0.3, min_pos_iou=0.3,
                               match_low_quality=True, ignore_iof_thr=-1),
                 sampler=dict(type='RandomSampler', num=256, pos_fraction=0.5, neg_pos_ub=-1, add_gt_as_proposals=False),
                 allowed_border=-1, pos_weight=-1, debug=False),
        rpn_proposal=dict(nms_pre=2000, max_per_img=1000, nms=dict(type='nms', iou_threshold=0.7), min_bbox_size=0),
        rcnn=dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.5,
                                match_low_quality=False, ignore_iof_thr=-1),
                  sampler=dict(type='RandomSampler', num=512, pos_fraction=0.25, neg_pos_ub=-1, add_gt_as_proposals=True),
                  pos_weight=-1, debug=False)),
    test_cfg=dict(
        rpn=dict(nms_pre=2000, max_per_img=1000, nms=dict(type='nms', iou_threshold=0.7), min_bbox_size=0),
        rcnn=dict(score_thr=0.01, nms=dict(type='nms', iou_threshold=0.4), max_per_img=100)))
