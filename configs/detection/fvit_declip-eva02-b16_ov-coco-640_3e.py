# F-ViT with a frozen DeCLIP EVA02-B/16 on OV-COCO at 640 px, 3 epochs, batch 64 (CLIPSelf's OV-COCO B/16 recipe;
# DeCLIP reports novel AP50 41.1). Backbone: the authors' released DeCLIP checkpoint or ours (docs/detection.md);
# class embeddings: tools/dump_class_embeddings.py with the ORIGINAL EVA02-CLIP text tower.
#   bash tools/dist_train.sh configs/detection/fvit_declip-eva02-b16_ov-coco-640_3e.py 8
#   python tools/test.py configs/detection/fvit_declip-eva02-b16_ov-coco-640_3e.py work_dirs/.../epoch_3.pth
# Checkpoints: every epoch, all kept, no selection; report the LAST epoch (epoch_3.pth), as CLIPSelf (its OV-COCO
# configs: checkpoint_config interval 1, evaluation every epoch, no save_best). The validation set IS the test set
# (instances_val2017_all_2.json): picking the epoch with the best coco/novel_ap50 there (save_best='coco/novel_ap50',
# rule='greater' in the checkpoint hook) selects on the test data and inflates the figure; only for diagnosis.
_base_ = [
    '../_base_/models/fvit_eva02_b16.py',
    '../_base_/datasets/ov_coco.py',
    '../_base_/schedules/fvit_3e.py',
    '../_base_/mmdet_runtime.py',
]
model = dict(
    roi_head=dict(bbox_head=dict(
        num_classes=65,
        cls_predictor_cfg=dict(embeddings='checkpoints/ov_coco_65_eva02-b16_vild.pt', class_names={{_base_.classes}}),
        loss_cls=dict(class_weight={{_base_.class_weight}}),
        vlm_temperature=75.0, alpha=0.1, beta=0.8)))
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1, save_last=True))  # no epoch selection: header
