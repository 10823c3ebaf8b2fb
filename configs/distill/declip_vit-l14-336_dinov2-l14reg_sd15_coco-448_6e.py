# OpenAI ViT-L/14-336 student: DINOv2-L/14-reg teacher (same 32 x 32 grid at 448 px), 336 px crops, ensemble
# alpha 0.95 (as the authors' L/14 script). The papers give the input size for B/16 only (560); 448 keeps the grid
# close to B/16's 35 x 35.
_base_ = ['./declip_eva02-b16_dinov2-b14reg_sd15_coco-560_6e.py']
model = dict(
    student=dict(model_name='ViT-L-14-336', pretrained='openai', input_size=448),
    vfm_teacher=dict(arch='dinov2_vitl14_reg', checkpoint='checkpoints/dinov2_vitl14_reg4_pretrain.pth'))
train_dataloader = dict(dataset=dict(student_size=448, student_patch=14, vfm_patch=14, crop_size=336))
custom_hooks = [dict(type='DeCLIPDistillHook', alpha=0.95)]
# the authors' AdamW defaults for 'vit' model names (see declip_vit-b16_...py)
optim_wrapper = dict(optimizer=dict(betas=(0.9, 0.98), eps=1e-6))
