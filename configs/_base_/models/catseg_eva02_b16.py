# CAT-Seg (CVPR'24; docs/catseg.md) with a DeCLIP EVA02-B/16 (DeCLIP_CATSeg's eva_vitb_384.yaml): CLIP at 384 px
# (24 x 24 tokens), dense features from the decoupled last block ('csa', no 1/sqrt(d), as the DeCLIP_CATSeg branch),
# guidance from blocks 3 and 7, the EVA02-CLIP text tower with one prompt, the CVPR'24 aggregator (2 layers, 4 heads,
# 128-d, window 12, 256 class slots), pooling 2 x 2 in training and 1 x 1 at test, CLIP mean/std.
model = dict(
    type='CATSeg',
    # mean / std: declip_mm.constants.CLIP_MEAN_255 / CLIP_STD_255 (CAT-Seg's PIXEL_MEAN / PIXEL_STD)
    data_preprocessor=dict(type='SegDataPreProcessor', mean=[122.7709383, 116.7460125, 104.09373615],
                           std=[68.5005327, 66.6321579, 70.3231630], bgr_to_rgb=True, pad_val=0, seg_pad_val=255,
                           size=(384, 384)),
    backbone=dict(type='DeCLIPViT', model_name='EVA02-B-16', pretrained='checkpoints/declip_eva02_b16.pth',
                  mode='csa', attn_scale=1.0, out_indices=(3, 7), input_size=384),
    text_model='EVA02-B-16', text_pretrained='merged2b_s8b_b131k',
    class_names='coco', template='A photo of a {} in the scene', clip_resolution=384,
    aggregator=dict(type='CATSegAggregator', text_dim=512, appearance_dim=512, prompts=1, hidden_dim=128, proj_dim=128,
                    num_layers=2, heads=4, feature_size=24, window=12, decoder_dims=(64, 32),
                    decoder_guidance_dims=(256, 128), decoder_guidance_proj_dims=(32, 16), pad_len=256),
    guidance_dims=(256, 128), train_pool=(2, 2), test_pool=(1, 1),
    test_cfg=dict(out_res=640, kernel=384, overlap=0.333))
