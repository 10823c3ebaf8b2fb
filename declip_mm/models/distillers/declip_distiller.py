"""DeCLIPDistiller: one student pass -> dense + context; frozen teachers -> targets; the loss dict.

    L = L_content (student regions vs CLIP-teacher crop embeddings)
      + lambda * L_ctx (student context affinities vs VFM affinities, optionally SD-completed)
      + w_rcc * L_rcc (region correlation, optional)

The loss weights live in the loss modules' ``loss_weight``. Teachers are NOT submodules: they hold no
trainable state, are rebuilt from their weights at construction, stay out of checkpoints and out of DDP,
and ``DeCLIPDistillHook`` places them (device, dtype, eval mode). The CLIP teacher is a frozen copy of the
student as constructed, i.e. of the original weights (docs/method.md section 2); it also provides the
original weights of the weight-space ensemble.
"""
import copy
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from mmengine.dist import all_reduce, get_world_size
from mmengine.model import BaseDataPreprocessor, BaseModel

from ...constants import CLIP_MEAN_255 as CLIP_MEAN, CLIP_STD_255 as CLIP_STD  # noqa: F401 (old names)
from ...constants import IMAGENET_MEAN_255, IMAGENET_STD_255
from ...registry import MODELS
from ..losses import complete_with_diffusion, cosine_matrix, student_affinity
from .teacher_cache import TeacherCache, state_digest, weights_digest

CONTEXT_FEATURES = ('context', 'dense')   # what the context loss reads: q / k (DeCLIP) or the dense map


def _normalizer(mean, std):
    return torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)


@MODELS.register_module()
class DistillDataPreprocessor(BaseDataPreprocessor):
    """Moves a distillation batch to the device and normalises each view (uint8 -> float).

    student and crops: CLIP mean/std; vfm: ImageNet mean/std; sd: scaled to [-1, 1]. Validation batches of an
    mmseg dataset (with ``data_samples``) go to ``eval_preprocessor`` (e.g. mmseg's SegDataPreProcessor).

    Args:
        clip_mean (Sequence[float]): mean of the student view and the crops, 0-255 scale. Defaults to open_clip's
            OpenAI mean x 255.
        clip_std (Sequence[float]): their std, 0-255 scale. Defaults to open_clip's OpenAI std x 255.
        vfm_mean (Sequence[float]): mean of the VFM view. Defaults to ImageNet's.
        vfm_std (Sequence[float]): std of the VFM view. Defaults to ImageNet's.
        eval_preprocessor (dict, optional): config of the preprocessor for validation batches. Defaults to None.
    """

    def __init__(self, clip_mean=CLIP_MEAN, clip_std=CLIP_STD, vfm_mean=IMAGENET_MEAN_255, vfm_std=IMAGENET_STD_255,
                 eval_preprocessor: Optional[dict] = None):
        super().__init__()
        for name, (m, s) in dict(clip=_normalizer(clip_mean, clip_std), vfm=_normalizer(vfm_mean, vfm_std)).items():
            self.register_buffer(f'{name}_mean', m, persistent=False)
            self.register_buffer(f'{name}_std', s, persistent=False)
        self.eval_preprocessor = MODELS.build(eval_preprocessor) if eval_preprocessor else None

    def forward(self, data: dict, training: bool = False) -> dict:
        if not training and 'data_samples' in data:
            if self.eval_preprocessor is None:
                raise ValueError('a validation batch reached DistillDataPreprocessor without an eval_preprocessor; '
                                 "set model.data_preprocessor.eval_preprocessor=dict(type='mmseg.SegDataPreProcessor', ...)")
            return self.eval_preprocessor(data, False)
        inputs = self.cast_data(data)['inputs']
        out = dict(inputs)
        out['student'] = (inputs['student'].float() - self.clip_mean) / self.clip_std
        out['crops'] = (inputs['crops'].float() - self.clip_mean) / self.clip_std
        out['vfm'] = (inputs['vfm'].float() - self.vfm_mean) / self.vfm_std
        if 'sd' in inputs:
            out['sd'] = inputs['sd'].float() / 127.5 - 1
        return dict(inputs=out)


@MODELS.register_module()
class DeCLIPDistiller(BaseModel):
    """Student DeCLIPViT + frozen teachers -> DeCLIP losses.

    Args:
        student (dict): DeCLIPViT config (its ``pretrained`` weights are also the CLIP teacher's).
        vfm_teacher (dict): VFMTeacher config (or any registered context teacher: a module with ``patch_size``
            mapping its input to (B, h*w, C) tokens; it reads the ``vfm`` view unless its ``input_view`` names
            another batch entry).
        diffusion_teacher (dict, optional): DiffusionTeacher config, or None (no SD completion). Defaults to None.
        context_loss (dict, optional): ContextDistillLoss config; None turns the term off (the content-only
            ablation, CLIPSelf-like). Defaults to ``dict(type='ContextDistillLoss')``.
        content_loss (dict, optional): ContentDistillLoss config; None turns the term off (the context-only
            ablation). At least one of context / content must be on. Defaults to ``dict(type='ContentDistillLoss')``.
        rcc_loss (dict, optional): RegionCorrelationLoss config; None turns the term off.
            Defaults to ``dict(type='RegionCorrelationLoss')``.
        context_features (str): what the context loss reads: 'context' (DeCLIP: the decoupled block's q / k)
            or 'dense' (the output dense map's tokens, the features the content loss reads too: the ablation
            "joint distillation without decoupling"). Defaults to 'context'.
        region_cells (int): N of the N x N RoIAlign cells (weighted content pooling and the region correlation).
            Defaults to 4.
        teacher_cache (str, optional): folder for cached teacher targets, or None. Defaults to None.
        crop_batch (int): crops per CLIP-teacher call (all crops of a batch go through in chunks of this size).
            Defaults to 64.
        val_segmentor (dict, optional): TrainingFreeSegmentor settings (text_encoder, class_names, logit_scale,
            bg_thresh, test_cfg) to validate the student during distillation with an mmseg val_dataloader; the
            student is its backbone (DeCLIPDistillHook swaps in the ensembled weights for validation).
            Defaults to None.
        data_preprocessor (dict): config of the batch preprocessor.
            Defaults to ``dict(type='DistillDataPreprocessor')``.
        init_cfg (dict, optional): mmengine initialisation config. Defaults to None.
    """

    def __init__(self, student: dict, vfm_teacher: dict, diffusion_teacher: Optional[dict] = None,
                 context_loss: Optional[dict] = dict(type='ContextDistillLoss'),
                 content_loss: Optional[dict] = dict(type='ContentDistillLoss'),
                 rcc_loss: Optional[dict] = dict(type='RegionCorrelationLoss'),
                 context_features: str = 'context',
                 region_cells: int = 4, teacher_cache: Optional[str] = None, crop_batch: int = 64,
                 val_segmentor: Optional[dict] = None,
                 data_preprocessor: dict = dict(type='DistillDataPreprocessor'), init_cfg=None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.student = MODELS.build(student)
        clip_teacher = copy.deepcopy(self.student).requires_grad_(False).eval()
        vfm = MODELS.build(vfm_teacher)
        sd = MODELS.build(diffusion_teacher) if diffusion_teacher else None
        # plain dict: teachers are not submodules (no checkpoints, no DDP, placed by the hook)
        self.teachers = dict(clip=clip_teacher, vfm=vfm, sd=sd)
        # the validation segmentor shares the student; kept out of the submodules for the same reasons
        self.evaluators = dict(seg=MODELS.build(dict(type='TrainingFreeSegmentor', backbone=self.student,
                                                     **val_segmentor)) if val_segmentor else None)
        if context_loss is None and content_loss is None:
            raise ValueError('DeCLIPDistiller needs context_loss or content_loss (both are None)')
        if context_features not in CONTEXT_FEATURES:
            raise ValueError(f"context_features must be one of {CONTEXT_FEATURES}, got '{context_features}'")
        self.context_loss = MODELS.build(context_loss) if context_loss else None
        self.content_loss = MODELS.build(content_loss) if content_loss else None
        self.context_features = context_features
        self.rcc_loss = MODELS.build(rcc_loss) if rcc_loss else None
        self.region_cells = region_cells
        self.crop_batch = crop_batch
        self.caches = {}
        if teacher_cache:
            self.caches = self._build_caches(teacher_cache, vfm_teacher, diffusion_teacher)

    def _build_caches(self, root: str, vfm_teacher: dict, diffusion_teacher: Optional[dict]) -> dict:
        """Teacher caches whose keys cover the config, the view normalisation and the weights' content."""
        view = getattr(self.teachers['vfm'], 'input_view', 'vfm')
        if view != 'vfm':
            raise ValueError(f"teacher_cache keys targets by image content, but the context teacher reads '{view}', "
                             'not the image; run it without teacher_cache')
        pre = self.data_preprocessor
        vfm_norm = [pre.vfm_mean.flatten().tolist(), pre.vfm_std.flatten().tolist()] \
            if hasattr(pre, 'vfm_mean') else type(pre).__name__
        checkpoint = vfm_teacher.get('checkpoint')
        weights = weights_digest(checkpoint) if checkpoint else state_digest(self.teachers['vfm'])
        caches = dict(vfm=TeacherCache(root, dict(teacher='vfm', cfg=vfm_teacher, normalisation=vfm_norm,
                                                  weights=weights)))
        if diffusion_teacher:
            caches['sd'] = TeacherCache(root, dict(teacher='sd', cfg=diffusion_teacher, normalisation='[-1, 1]',
                                                   weights=weights_digest(diffusion_teacher['folder'])))
        return caches

    # ------------------------------------------------------------------ teachers
    @property
    def clip_teacher(self):
        return self.teachers['clip']

    def place_teachers(self, device=None) -> None:
        """Move the teachers to ``device`` (default: the student's) and keep them in eval mode."""
        device = device or next(self.student.parameters()).device
        for teacher in self.teachers.values():
            if teacher is not None:
                teacher.to(device).eval()
        if self.evaluators['seg'] is not None:
            self.evaluators['seg'].to(device)

    def train(self, mode: bool = True):
        super().train(mode)
        for teacher in self.teachers.values():
            if teacher is not None:
                teacher.eval()
        return self

    def _teacher_target(self, name: str, keys: List[str], signature: str, compute) -> torch.Tensor:
        """The teacher's targets for a batch; ``signature`` names what shapes them besides the image (view
        size, target grid) and extends the image keys of the cache."""
        device = next(self.student.parameters()).device
        if name in self.caches:
            return self.caches[name].get_or_compute([f'{k}-{signature}' for k in keys], compute, device)
        return compute(list(range(len(keys))))

    @torch.no_grad()
    def _crop_embeddings(self, crops: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.clip_teacher.encode_image(chunk) for chunk in crops.split(self.crop_batch)])

    # ------------------------------------------------------------------ forward
    def forward(self, inputs, data_samples=None, mode: str = 'loss'):
        if mode == 'loss':
            return self.loss(inputs)
        if mode == 'predict' and self.evaluators['seg'] is not None:
            segmentor = self.evaluators['seg'].eval()
            return segmentor.predict(inputs, data_samples)
        raise ValueError(f"DeCLIPDistiller got mode='{mode}': it trains (mode='loss') and predicts only with "
                         'val_segmentor set (training-free segmentation by the student).')

    def loss(self, inputs: dict) -> Dict[str, torch.Tensor]:
        boxes = [b.to(inputs['student'].device) for b in inputs['boxes']]
        counts = [len(b) for b in boxes]
        feats = self.student.forward_features(inputs['student'], out_indices=())   # the one student pass
        vfm_view = inputs['vfm']
        p_vfm = self.teachers['vfm'].patch_size
        vfm_grid = (vfm_view.shape[-2] // p_vfm, vfm_view.shape[-1] // p_vfm)

        losses = {}
        vfm_tokens = None
        if self.context_loss is not None or self.rcc_loss is not None:
            teacher_input = self._vfm_input(inputs)
            vfm_tokens = self._teacher_target(                                               # (B, hv*wv, C')
                'vfm', inputs['keys'], 'x'.join(map(str, vfm_view.shape[-2:])),
                lambda idx: self.teachers['vfm'](teacher_input[idx]))
        if self.context_loss is not None:
            # context: affinities on the VFM grid
            student_tokens = feats.context if self.context_features == 'context' else \
                feats.dense.flatten(2).transpose(1, 2)
            context = self._context_on_grid(student_tokens, feats.dense.shape[-2:], vfm_grid)
            s_target = cosine_matrix(vfm_tokens)
            if self.teachers['sd'] is not None:
                sd_view = inputs['sd']
                a_sd = self._teacher_target(
                    'sd', inputs['keys'], '{}x{}-to-{}x{}'.format(*sd_view.shape[-2:], *vfm_grid),
                    lambda idx: self.teachers['sd'](sd_view[idx], vfm_grid))
                s_target = complete_with_diffusion(s_target, a_sd)
            losses['loss_context'] = self.context_loss(student_affinity(context), s_target)

        n = self.region_cells
        cells = None
        if self.content_loss is not None:
            # content: student regions vs the CLIP teacher's crops
            teacher_emb = self._crop_embeddings(inputs['crops'])
            n = 1 if self.content_loss.pooling == '1x1' else self.region_cells
            cells = torch.cat(self.student.extract_regions(feats.dense, boxes, output_size=n, normalize=False))
            if n == 1:
                cells = cells[:, None]
            losses['loss_content'] = self.content_loss(cells, teacher_emb, counts)

        if self.rcc_loss is not None:
            if cells is None or n != self.region_cells:
                cells = torch.cat(self.student.extract_regions(feats.dense, boxes, output_size=self.region_cells,
                                                               normalize=False))
            vfm_cells = self._vfm_cells(vfm_tokens, vfm_grid, boxes, feats.dense.shape[-2:])
            losses['loss_rcc'] = self.rcc_loss(cells, vfm_cells, counts)
        losses['data_skipped'] = inputs['skipped'].float().sum()
        return losses

    def _vfm_input(self, inputs: dict) -> torch.Tensor:
        """What the context teacher reads: the ``vfm`` view, or the batch entry its ``input_view`` names (e.g. an
        oracle's ``vfm_labels``: the label maps in the VFM view's geometry, from the dataset's ``label_dir``)."""
        view = getattr(self.teachers['vfm'], 'input_view', 'vfm')
        if view not in inputs:
            raise KeyError(f"the context teacher {type(self.teachers['vfm']).__name__} reads the batch entry '{view}', "
                           f'which this batch lacks (it has {sorted(inputs)}); for label maps set the distillation '
                           "dataset's label_dir")
        return inputs[view]

    @staticmethod
    def _context_on_grid(context, grid, target_grid):
        """Resize (B, h*w, C) context tokens (or a (q, k) pair) to the teacher grid when the grids differ."""
        if tuple(grid) == tuple(target_grid):
            return context

        def resize(tokens):
            B, _, C = tokens.shape
            m = tokens.transpose(1, 2).reshape(B, C, *grid)
            return F.interpolate(m, size=target_grid, mode='bilinear', align_corners=False).flatten(2).transpose(1, 2)

        return tuple(resize(c) for c in context) if isinstance(context, tuple) else resize(context)

    def _vfm_cells(self, vfm_tokens, vfm_grid, boxes, student_grid):
        """VFM tokens pooled on the student's region cells: (K, N*N, C')."""
        from mmcv.ops import roi_align
        B, _, C = vfm_tokens.shape
        vfm_map = vfm_tokens.transpose(1, 2).reshape(B, C, *vfm_grid).contiguous()
        # boxes are in student pixels; token units of the student grid, rescaled to the VFM grid
        p = self.student.patch_size
        scale = torch.tensor([vfm_grid[1] / student_grid[1], vfm_grid[0] / student_grid[0]] * 2,
                             device=vfm_map.device) / p
        rois = torch.cat([torch.cat([b.new_full((len(b), 1), i), b * scale], dim=1) for i, b in enumerate(boxes)])
        cells = roi_align(vfm_map, rois.float(), (self.region_cells, self.region_cells), 1.0, 0, 'avg', True)
        return cells.flatten(2).transpose(1, 2)

    def parse_losses(self, losses):
        """mmengine's reduction, with the logged values reduced over processes (the total loss stays local):
        losses averaged, the count of skipped images summed."""
        loss, log_vars = super().parse_losses(losses)
        if get_world_size() > 1:
            for key, value in log_vars.items():
                reduced = value.detach().clone().float()
                all_reduce(reduced, op='sum' if key == 'data_skipped' else 'mean')
                log_vars[key] = reduced
        return loss, log_vars
