# Context-only distillation: the last block's q / k affinities -> the VFM's; no content loss.
_base_ = ['./_base_/distill_proof-world.py']
model = dict(content_loss=None)
