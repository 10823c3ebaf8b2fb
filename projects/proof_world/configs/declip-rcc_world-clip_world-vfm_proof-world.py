# DeCLIP + region correlation constraint (journal): DeCLIP plus RCC on the N x N cells of each region.
_base_ = ['./_base_/distill_proof-world.py']
model = dict(rcc_loss=dict(_delete_=True, type='RegionCorrelationLoss', tau=0.1, loss_weight=0.05))
