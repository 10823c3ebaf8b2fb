"""RPN head with normalised convolutions (CLIPSelf ``F-ViT/models/custom_rpn_head.py`` @1c7fe9c, OV-LVIS): mmdet
3.3's ``RPNHead`` builds its ``num_convs`` 3x3 convs without a norm; this one takes ``norm_cfg``."""
from mmcv.cnn import ConvModule
from mmdet.models.dense_heads import RPNHead
from torch import nn

from ...registry import MODELS


@MODELS.register_module()
class NormRPNHead(RPNHead):
    """``RPNHead`` whose shared 3x3 convs are ConvModule(conv, ``norm_cfg``, ReLU).

    Args:
        *args: mmdet's ``RPNHead`` arguments (``in_channels``, ``num_convs``, ...).
        norm_cfg (dict): the norm of the shared convs. Defaults to ``dict(type='SyncBN', requires_grad=True)``.
        **kwargs: more ``RPNHead`` arguments.
    """

    def __init__(self, *args, norm_cfg: dict = dict(type='SyncBN', requires_grad=True), **kwargs):
        self.norm_cfg = norm_cfg
        super().__init__(*args, **kwargs)

    def _init_layers(self) -> None:
        convs = [ConvModule(self.in_channels if i == 0 else self.feat_channels, self.feat_channels, 3, padding=1,
                            norm_cfg=self.norm_cfg, inplace=False) for i in range(self.num_convs)]
        self.rpn_conv = nn.Sequential(*convs)
        self.rpn_cls = nn.Conv2d(self.feat_channels, self.num_base_priors * self.cls_out_channels, 1)
        reg_dim = self.bbox_coder.encode_size
        self.rpn_reg = nn.Conv2d(self.feat_channels, self.num_base_priors * reg_dim, 1)
