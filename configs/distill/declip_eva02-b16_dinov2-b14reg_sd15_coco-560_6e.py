# DeCLIP (journal, arXiv 2508.11256) paper setting: EVA02-CLIP-B/16 student at 560 px, DINOv2-B/14-reg teacher
# at 490 px, Stable Diffusion v1.5 completion, lambda 0.25, AdamW 1e-5, wd 0.1, 6 epochs, batch 16, AMP.
#   bash tools/dist_train.sh configs/distill/declip_eva02-b16_dinov2-b14reg_sd15_coco-560_6e.py 4
_base_ = [
    '../_base_/models/declip_eva02_b16_dinov2_b14reg.py',
    '../_base_/datasets/coco_distill_560.py',
    '../_base_/schedules/distill_6e.py',
    '../_base_/default_runtime.py',
]
train_dataloader = dict(dataset=dict(sd_size=512))
