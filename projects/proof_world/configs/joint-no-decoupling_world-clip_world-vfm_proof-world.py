# Joint distillation WITHOUT decoupling: both targets on the same features. The content loss reads the dense
# map as in DeCLIP, and the context (affinity) loss reads the SAME dense map's tokens instead of q / k
# (model.context_features='dense'); loss weights as DeCLIP's.
_base_ = ['./_base_/distill_proof-world.py']
model = dict(context_features='dense')
