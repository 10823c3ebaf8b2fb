"""F-ViT (CLIPSelf, ICLR 2024; the detector DeCLIP reports OV-COCO / OV-LVIS numbers with) on mmdet 3.x.

    image -> frozen DeCLIPViT (taps at out_indices; the last tap in ``last_tap_mode``) -> SimplePyramid -> FPN
          -> RPN -> FViTRoIHead (text-embedding classifier; at test fused with the CLIP map pooled at proposals)

The backbone returns its four taps and the dense CLIP map; the pyramid ignores the map, so training is a
plain ``TwoStageDetector``. At test the map, L2-normalised per pixel, rides along with the neck's features
(:class:`FeatureMaps`) to the RoI head.
"""
import torch.nn.functional as F
from mmdet.models.detectors import TwoStageDetector

from ...registry import MODELS
from .fvit_heads import FeatureMaps


@MODELS.register_module()
class FViT(TwoStageDetector):
    """``TwoStageDetector`` whose test pass hands the backbone's dense CLIP map (its last output) to the RoI head.
    Construction checks that the CLIP map fits the head: the class embeddings' dimension is the backbone's joint
    space, and ``vlm_roi_extractor`` pools at the backbone's patch stride. The arguments are mmdet's
    ``TwoStageDetector``'s.

    Args:
        backbone (dict): a CLIP backbone that returns its dense map last and has ``embed_dim`` and
            ``patch_size``: ``DeCLIPViT`` (F-ViT: ``trainable='none'``).
        neck (dict, optional): e.g. ``[SimplePyramid, FPN]``; it reads the backbone's taps, not the dense map.
        rpn_head (dict, optional): ``RPNHead`` (OV-COCO) or ``NormRPNHead`` (OV-LVIS).
        roi_head (dict, optional): ``FViTRoIHead`` with an ``FViTBBoxHead`` (required: F-ViT needs a RoI head).
        train_cfg (dict, optional): mmdet's RPN / R-CNN training settings.
        test_cfg (dict, optional): mmdet's RPN / R-CNN test settings.
        data_preprocessor (dict, optional): ``DetDataPreprocessor`` config (the parity configs: ImageNet
            mean / std, padded to a square).
        init_cfg (dict, optional): mmengine initialisation config.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        backbone, head = self.backbone, self.roi_head
        embed_dim, patch = getattr(backbone, 'embed_dim', None), getattr(backbone, 'patch_size', None)
        if embed_dim is None or patch is None:
            raise ValueError(f'FViT needs a CLIP backbone that returns its dense map last (DeCLIPViT), '
                             f'got {type(backbone).__name__}')
        head.bbox_head.fc_cls.check_dim(embed_dim, f"the backbone's CLIP map ({backbone.model_name}) is")
        strides = list(head.vlm_roi_extractor.featmap_strides)
        if strides != [patch]:
            raise ValueError(f'vlm_roi_extractor.featmap_strides={strides}, but the CLIP map of '
                             f'{backbone.model_name} has stride {patch}')

    def predict(self, batch_inputs, batch_data_samples, rescale: bool = True):
        if not self.with_bbox:
            raise ValueError('F-ViT needs a RoI head')
        outputs = self.backbone(batch_inputs)
        feats = self.neck(outputs) if self.with_neck else outputs
        vlm = F.normalize(outputs[-1], dim=1)
        if batch_data_samples[0].get('proposals', None) is None:
            rpn_results = self.rpn_head.predict(feats, batch_data_samples, rescale=False)
        else:
            rpn_results = [s.proposals for s in batch_data_samples]
        results = self.roi_head.predict(FeatureMaps(feats, vlm), rpn_results, batch_data_samples, rescale=rescale)
        return self.add_pred_to_datasample(batch_data_samples, results)
