# The paper setting with an OpenAI ViT-B/16 student (open_clip tag 'openai', QuickGELU applied automatically).
_base_ = ['./declip_eva02-b16_dinov2-b14reg_sd15_coco-560_6e.py']
model = dict(student=dict(model_name='ViT-B-16', pretrained='openai'))
