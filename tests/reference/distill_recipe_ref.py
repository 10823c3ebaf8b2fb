"""Independent reference re-implementation of the DeCLIP distillation recipe.

Written from reading public code only (no code copied verbatim):

* ``DC`` = github.com/xiaomoguhz/DeCLIP @ 2c0b3decc89fc4072651a1fc832ca3be49e2dd76
  (branch ``main``; training code added in 2f0ffc724814a905e6716aaf111d8abe1d8a7ef4 /
  56e753f113e385706caa4d9206d2196a10f3493f).
* ``D2`` = github.com/facebookresearch/dinov2 @ b8931f7bf91576930313be2c6d6af376033b35f0
  (``dinov2/models/vision_transformer.py`` last touched at
  85a24602099d397264d5b30461ad7f3bfd726ca1; the size=/scale_factor= branch logic of
  ``interpolate_pos_encoding`` dates from e1277af2ba9496fbadf7aec6eba56e8d882d1e35).

Only ``torch`` and ``math`` are used.  See /tmp/ref_notes/distillation.md for the
full table of findings.
"""

import math

import torch
import torch.nn.functional as F

__all__ = [
    "reference_cosine_lr",
    "reference_dinov2_interpolate_pos_encoding",
    "reference_content_loss",
    "reference_context_loss",
    "reference_adamw_hparams",
]


def reference_cosine_lr(step, base_lr, warmup_length, total_steps):
    """Learning rate at iteration ``step`` (0-based, counted per optimiser iteration).

    Reproduces ``cosine_lr`` / ``_warmup_lr`` from
    ``DC src/training/scheduler.py`` (l.9-10, l.43-53), called every iteration with
    ``step = num_batches_per_epoch * epoch + i`` (``DC src/training/train.py`` l.78-81)
    and ``total_steps = num_batches_per_epoch * epochs`` (``DC src/training/main.py``
    l.247-249).  The scripts pass ``--warmup 1000``.

    * ``step < W``: linear warm-up ``base_lr * (step + 1) / W``.
    * otherwise: cosine from ``base_lr`` to 0 over the remaining ``T - W`` steps,
      ``0.5 * (1 + cos(pi * (step - W) / (T - W))) * base_lr``.

    (The reference uses ``np.cos``; ``math.cos`` may differ by ~1 ulp.)
    """
    if step < warmup_length:
        return base_lr * (step + 1) / warmup_length
    e = step - warmup_length
    es = total_steps - warmup_length
    return 0.5 * (1.0 + math.cos(math.pi * e / es)) * base_lr


def reference_dinov2_interpolate_pos_encoding(pos_embed, h_tokens, w_tokens,
                                              antialias, offset):
    """Resize DINOv2 absolute position embeddings to an ``h_tokens x w_tokens`` grid.

    Reproduces ``DinoVisionTransformer.interpolate_pos_encoding`` in
    ``D2 dinov2/models/vision_transformer.py`` (l.180-212), as called from
    ``prepare_tokens_with_masks`` (l.214-221).  That code does
    ``B, nc, w, h = x.shape``, so its ``w0`` is the number of token *rows*
    (``h_tokens`` here) and its ``h0`` the number of token *columns* (``w_tokens``).

    * ``pos_embed``: (1, 1 + M*M, C); index 0 is the CLS position (kept as is,
      never interpolated); registers carry no position embedding.
    * Shortcut: if the number of patches equals M*M and the input is square, the
      embedding is returned untouched.
    * Otherwise, in float32: the patch part is reshaped to (1, C, M, M) and
      bicubic-interpolated with ``antialias`` and ``align_corners`` at its default:
        - ``offset`` falsy (0.0, used by the ``*_reg`` hub models, see
          ``D2 dinov2/hub/backbones.py`` l.96-156: antialias=True, offset=0.0):
          ``size=(h_tokens, w_tokens)``;
        - ``offset`` truthy (0.1, the default for non-register hub models):
          ``scale_factor=((h_tokens + offset) / M, (w_tokens + offset) / M)``.
      The result is flattened row-major, concatenated after the CLS position and
      cast back to the input dtype.

    Returns a (1, 1 + h_tokens * w_tokens, C) tensor.
    """
    n_pos = pos_embed.shape[1] - 1
    if h_tokens * w_tokens == n_pos and h_tokens == w_tokens:
        return pos_embed
    out_dtype = pos_embed.dtype
    pe = pos_embed.float()
    cls_pos = pe[:, 0]
    patch_pos = pe[:, 1:]
    dim = pe.shape[-1]
    m = int(math.sqrt(n_pos))
    assert m * m == n_pos, "position grid must be square"
    grid = patch_pos.reshape(1, m, m, dim).permute(0, 3, 1, 2)
    if offset:
        resized = F.interpolate(
            grid,
            scale_factor=(float(h_tokens + offset) / m, float(w_tokens + offset) / m),
            mode="bicubic",
            antialias=antialias,
        )
    else:
        resized = F.interpolate(
            grid,
            size=(h_tokens, w_tokens),
            mode="bicubic",
            antialias=antialias,
        )
    assert tuple(resized.shape[-2:]) == (h_tokens, w_tokens)
    resized = resized.permute(0, 2, 3, 1).reshape(1, h_tokens * w_tokens, dim)
    return torch.cat([cls_pos.unsqueeze(0), resized], dim=1).to(out_dtype)


def reference_content_loss(student_regions_per_image, teacher_regions_per_image):
    """DeCLIP content (crop-distillation) loss, ``1 - cosine``.

    Reproduces ``DC src/training/declip.py`` l.23-43: student RoI features
    (``encode_pseudo_boxes(..., normalize=True)``, ``roi_align`` over the per-image box
    list, hence concatenated in image order) and teacher crop embeddings
    (``encode_image(torch.cat(crops_list), normalize=True)``) are L2-normalised, and
    ``loss = 1 - (s * t).sum(-1).mean()``: ONE mean over ALL valid regions of the
    batch concatenated (not a per-image mean averaged over images).  The content
    weight (1.0 in the scripts) is not applied here.
    """
    student = torch.cat(list(student_regions_per_image), dim=0)
    teacher = torch.cat(list(teacher_regions_per_image), dim=0)
    assert student.shape == teacher.shape
    student = F.normalize(student, dim=-1)
    teacher = F.normalize(teacher, dim=-1)
    return 1.0 - (student * teacher).sum(-1).mean()


def reference_context_loss(teacher_feats, student_feats):
    """DeCLIP context loss (extra helper, unweighted; scripts use weight 0.1).

    Reproduces ``DC src/training/declip.py`` l.38-41, l.51-77 for equal grids:

    * ``teacher_feats``: (B, C_t, N) VFM patch features (e.g. DINOv2
      ``get_intermediate_layers(..., reshape=True)[0]`` flattened), normalised over
      channels, similarity ``S_t = f^T f`` of shape (B, N, N);
    * ``student_feats``: (B, N, C_s) student q (heads concatenated, CLS removed),
      normalised over the last dim, ``S_s`` of shape (B, N, N);
    * ``loss = ||S_t - S_s||_2 over the last dim`` (unsquared, per row), then the
      mean over all B*N rows.
    """
    t = F.normalize(teacher_feats, dim=1)
    s = F.normalize(student_feats, dim=-1).transpose(-2, -1)
    sim_t = torch.einsum("bcm,bcn->bmn", t, t)
    sim_s = torch.einsum("bcm,bcn->bmn", s, s)
    return (sim_t - sim_s).norm(p=2, dim=-1).mean()


def reference_adamw_hparams(model_kind):
    """AdamW betas/eps the DeCLIP trainer uses when ``--beta1/--beta2/--eps`` are unset.

    Reproduces ``get_default_params`` in ``DC src/training/params.py`` (l.5-11,
    applied at l.451-454; the scripts pass none of these flags).  The decision is a
    substring test on the lower-cased ``--model`` name only:

    * ``"vit" in name`` (e.g. ``"ViT-B-16"``, ``"ViT-L-14-336"``, or simply
      ``"vit"``): betas (0.9, 0.98), eps 1e-6;
    * anything else (e.g. ``"RN50"``, and notably ``"EVA02-CLIP-B-16"`` and
      ``"EVA02-CLIP-L-14-336"`` used by both DeCLIP scripts): betas (0.9, 0.999),
      eps 1e-8.

    (The same rule also yields lr 5e-4, which is never used because ``--lr``
    defaults to 1e-5; the scripts pass ``--lr=1e-5 --wd=0.1``.)
    """
    name = str(model_kind).lower()
    if "vit" in name:
        return dict(betas=(0.9, 0.98), eps=1.0e-6)
    return dict(betas=(0.9, 0.999), eps=1.0e-8)
