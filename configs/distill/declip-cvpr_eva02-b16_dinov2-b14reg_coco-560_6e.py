# The CVPR 2025 DeCLIP recipe, as the authors' script scripts/dist_DeCLIP_eva_vitb16_coco.sh
# (xiaomoguhz/DeCLIP@2c0b3de) runs it: EVA02-CLIP-B/16 at 560 px, mode qq (q q^T attention, k frozen) with NO
# 1/sqrt(d) (their EVA attention leaves the scale out: attn_scale=1.0), DINOv2-B/14-reg at 490 px (35 x 35
# tokens), L2 row-norm context loss with lambda 0.1, 1x1 content loss (weight 1), no diffusion completion, no
# region correlation; AdamW 1e-5, wd 0.1, betas (0.9, 0.999) / eps 1e-8, 1000 warm-up iterations then cosine,
# 6 epochs, 4 GPUs x 4 images, fp16 AMP, DINOv2 in fp16; ensemble alpha 0.7. Evaluate its checkpoints with the segmentation
# configs, which run at 1/sqrt(d) as the authors' segmentation code does.
_base_ = ['./declip_eva02-b16_dinov2-b14reg_sd15_coco-560_6e.py']
model = dict(
    student=dict(mode='qq', attn_scale=1.0),
    vfm_teacher=dict(dtype='fp16'),                 # the authors run DINOv2 in .half()
    diffusion_teacher=None,
    context_loss=dict(kind='l2', loss_weight=0.1),
    content_loss=dict(pooling='1x1'),
    rcc_loss=None)
train_dataloader = dict(dataset=dict(sd_size=None))
