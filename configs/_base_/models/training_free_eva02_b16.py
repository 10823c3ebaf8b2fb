# Training-free open-vocabulary segmentation with a DeCLIP EVA02-B/16 (docs/evaluation.md), the protocol of the
# authors' DeCLIPSegmentation (DeCLIP zero-shot branch @3b65d49; docs/evaluation.md has the table). The DeCLIP
# weights are given on the command line: tools/test.py CONFIG declip_backbone.pth (or the authors' .pt). Dense
# features: the decoupled block in 'csa' mode (model.mode), as every one of the authors' configs, whatever mode the
# checkpoint was distilled in; attention scale 1/sqrt(d), as their segmentation code multiplies q q^T and k k^T by
# it, whatever scale the checkpoint was distilled with (a stored scale is overridden, with a warning). Without a
# checkpoint the backbone is the original EVA02-CLIP ('csa' = an SCLIP-style baseline; model.mode='vanilla' /
# 'maskclip' for the CLIP / MaskCLIP baselines).
model = dict(
    type='TrainingFreeSegmentor',
    # mean / std: declip_mm.constants.CLIP_MEAN_255_ROUNDED / CLIP_STD_255_ROUNDED (the authors' configs)
    data_preprocessor=dict(type='SegDataPreProcessor', mean=[122.771, 116.746, 104.094],
                           std=[68.501, 66.632, 70.323], bgr_to_rgb=True, pad_val=0, seg_pad_val=255),
    backbone=dict(type='DeCLIPViT', model_name='EVA02-B-16', pretrained='merged2b_s8b_b131k', mode=None,
                  attn_scale='1/sqrt(d)', trainable='none'),
    text_encoder=dict(type='OpenCLIPTextEncoder', model_name='EVA02-B-16', pretrained='merged2b_s8b_b131k',
                      templates='imagenet80', synonym_reduce='max'),
    class_names='voc21',
    mode='csa',
    logit_scale=40.0,
    bg_thresh=0.0,
    test_cfg=dict(mode='slide', crop_size=(336, 336), stride=(112, 112)))
