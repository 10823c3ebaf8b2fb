# DeCLIP (content + context, decoupled): content loss on the dense map, context loss on the last block's q / k
# (csa). The journal's weights (lambda 0.25, content 1.0), without RCC (see declip-rcc_*) and without SD.
_base_ = ['./_base_/distill_proof-world.py']
