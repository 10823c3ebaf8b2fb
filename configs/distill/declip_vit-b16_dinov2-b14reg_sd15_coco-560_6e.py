# The paper setting with an OpenAI ViT-B/16 student (open_clip tag 'openai', QuickGELU applied automatically).
# AdamW betas (0.9, 0.98), eps 1e-6: the authors' defaults for model names containing 'vit'
# (get_default_params in xiaomoguhz/DeCLIP@2c0b3de src/training/params.py); EVA students keep (0.9, 0.999) / 1e-8.
_base_ = ['./declip_eva02-b16_dinov2-b14reg_sd15_coco-560_6e.py']
model = dict(student=dict(model_name='ViT-B-16', pretrained='openai'))
optim_wrapper = dict(optimizer=dict(betas=(0.9, 0.98), eps=1e-6))
