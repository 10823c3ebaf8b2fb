# DeCLIP + SD-GSC + region correlation constraint: the journal's full method in the world.
_base_ = ['./declip-sd_world-clip_world-vfm_world-unet_proof-world.py']
model = dict(rcc_loss=dict(_delete_=True, type='RegionCorrelationLoss', tau=0.1, loss_weight=0.05))
