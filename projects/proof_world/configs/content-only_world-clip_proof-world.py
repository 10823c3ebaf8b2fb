# Content-only distillation (CLIPSelf-like): the dense map's regions -> the frozen CLIP's crop embeddings;
# no VFM, no context loss. Same decoupled (csa) student and schedule as DeCLIP, so only the loss differs.
_base_ = ['./_base_/distill_proof-world.py']
model = dict(context_loss=None)
