# DeCLIP + SD-guided semantic completion (journal): DeCLIP whose context target, the teacher's affinity, is
# completed by the fused self-attention of a diffusion UNet. In the world the UNet is a small pixel-space
# diffusers UNet2DModel trained on the world's train images (projects/proof_world/proof_world/diffusion_pretrain.py);
# the ablation fills in model.diffusion_teacher and the dataset's sd_size from its output.
_base_ = ['./_base_/distill_proof-world.py']
model = dict(diffusion_teacher=dict(_delete_=True, type='DiffusionTeacher', folder=None, timestep=100))
# the UNet's own side: 32 px (the 128 px scene shrunk 4x; its 16 x 16 attention level is the VFM grid)
train_dataloader = dict(dataset=dict(sd_size=32))
