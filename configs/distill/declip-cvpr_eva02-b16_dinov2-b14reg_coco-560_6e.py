# The CVPR 2025 DeCLIP variant: L2 context loss (lambda 0.1, as the CVPR scripts), 1x1 content pooling,
# no diffusion completion, no region correlation constraint.
_base_ = ['./declip_eva02-b16_dinov2-b14reg_sd15_coco-560_6e.py']
model = dict(
    diffusion_teacher=None,
    context_loss=dict(kind='l2', loss_weight=0.1),
    content_loss=dict(pooling='1x1'),
    rcc_loss=None)
train_dataloader = dict(dataset=dict(sd_size=None))
