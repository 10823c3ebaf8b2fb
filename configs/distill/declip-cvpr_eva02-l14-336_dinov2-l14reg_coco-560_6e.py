# The authors' L/14 CVPR script, scripts/dist_DeCLIP_eva_vitL14_336_coco.sh (xiaomoguhz/DeCLIP@2c0b3de):
# EVA02-CLIP-L/14-336 at 560 px (40 x 40 tokens), DINOv2-L/14-reg at 560 px (40 x 40 tokens), 336 px teacher
# crops, mode qq without 1/sqrt(d), lambda 0.1, ensemble alpha 0.95, AdamW 1e-5 (not rescaled), and a global
# batch of 8 = 4 GPUs x 2 images (the script's comment says 16; it launches 8).
#   bash tools/dist_train.sh configs/distill/declip-cvpr_eva02-l14-336_dinov2-l14reg_coco-560_6e.py 4
_base_ = ['./declip-cvpr_eva02-b16_dinov2-b14reg_coco-560_6e.py']
model = dict(
    student=dict(model_name='EVA02-L-14-336', pretrained='merged2b_s6b_b61k', input_size=560),
    vfm_teacher=dict(arch='dinov2_vitl14_reg', checkpoint='checkpoints/dinov2_vitl14_reg4_pretrain.pth'))
train_dataloader = dict(batch_size=2, dataset=dict(student_size=560, student_patch=14, vfm_patch=14, crop_size=336))
custom_hooks = [dict(type='DeCLIPDistillHook', alpha=0.95)]
auto_scale_lr = dict(base_batch_size=8)
