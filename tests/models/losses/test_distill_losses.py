"""Every distillation loss against a direct formula, written with explicit loops on small tensors."""
import math

import pytest
import torch

from declip_mm.models.losses import (ContentDistillLoss, ContextDistillLoss, RegionCorrelationLoss,
                                     complete_with_diffusion, student_affinity)


def cos(a, b):
    return float(a @ b / (a.norm() * b.norm()))


def softmax(row, tau):
    e = [math.exp(v / tau) for v in row]
    return [v / sum(e) for v in e]


def kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def cos_matrix(tokens):
    """(N, C) -> N x N list of cosines, by loops."""
    return [[cos(tokens[i], tokens[j]) for j in range(len(tokens))] for i in range(len(tokens))]


def test_student_affinity_csa_merges_heads_per_image():
    """For 'csa' S_clip is the mean of the q and k cosine matrices, each image on its own (batch > 1)."""
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(3, 5, 8, generator=g), torch.randn(3, 5, 8, generator=g)
    got = student_affinity((q, k))
    assert got.shape == (3, 5, 5)
    for b in range(3):
        qm, km = cos_matrix(q[b]), cos_matrix(k[b])
        for i in range(5):
            for j in range(5):
                assert got[b, i, j].item() == pytest.approx((qm[i][j] + km[i][j]) / 2, abs=1e-6)
    torch.testing.assert_close(student_affinity(q)[1], torch.tensor(cos_matrix(q[1])), atol=1e-6, rtol=0)


def test_context_l2_and_kl():
    g = torch.Generator().manual_seed(1)
    s_clip, s_t = torch.rand(2, 4, 4, generator=g) * 2 - 1, torch.rand(2, 4, 4, generator=g) * 2 - 1
    l2 = ContextDistillLoss(kind='l2', loss_weight=0.1)(s_clip, s_t)
    want = sum(math.sqrt(sum((s_t[b, i, j] - s_clip[b, i, j]).item() ** 2 for j in range(4)))
               for b in range(2) for i in range(4)) / 8
    assert l2.item() == pytest.approx(0.1 * want, rel=1e-5)
    klv = ContextDistillLoss(kind='kl', tau_t=0.2, tau_s=0.5, loss_weight=0.25)(s_clip, s_t)
    want = sum(kl(softmax(s_t[b, i].tolist(), 0.2), softmax(s_clip[b, i].tolist(), 0.5))
               for b in range(2) for i in range(4)) / 8
    assert klv.item() == pytest.approx(0.25 * want, rel=1e-5)
    assert ContextDistillLoss(kind='kl')(s_t, s_t).item() == pytest.approx(0, abs=1e-6)
    with pytest.raises(ValueError, match="'kl' or 'l2'"):
        ContextDistillLoss(kind='mse')


def test_context_gradient_flows_to_student_only():
    s_clip = torch.rand(1, 3, 3, requires_grad=True)
    s_t = torch.rand(1, 3, 3, requires_grad=True)
    ContextDistillLoss()(s_clip, s_t).backward()
    assert s_clip.grad is not None and s_t.grad is None


def test_sd_completion_is_a_matrix_product():
    a = torch.softmax(torch.randn(2, 4, 4), dim=-1)
    s = torch.rand(2, 4, 4)
    got = complete_with_diffusion(s, a)
    for b in range(2):
        for i in range(4):
            for j in range(4):
                assert got[b, i, j].item() == pytest.approx(sum(a[b, i, m] * s[b, m, j] for m in range(4)).item(),
                                                            abs=1e-6)
    with pytest.raises(ValueError, match='differ'):
        complete_with_diffusion(s, a[:, :3, :3])


def test_content_1x1_and_weighted_pooling():
    g = torch.Generator().manual_seed(2)
    cells, teacher = torch.randn(3, 4, 6, generator=g), torch.randn(3, 6, generator=g)
    counts = [2, 1]                       # image 0 has regions 0, 1; image 1 has region 2
    one = ContentDistillLoss(pooling='1x1')(cells[:, :1], teacher, counts)
    per = [1 - cos(cells[r, 0], teacher[r]) for r in range(3)]
    assert one.item() == pytest.approx(sum(per) / 3, rel=1e-5)          # the reference: over all regions
    one = ContentDistillLoss(pooling='1x1', average='image')(cells[:, :1], teacher, counts)
    assert one.item() == pytest.approx(((per[0] + per[1]) / 2 + per[2]) / 2, rel=1e-5)

    weighted = ContentDistillLoss(pooling='weighted', loss_weight=2.0, average='image')(cells, teacher, counts)
    per = []
    for r in range(3):
        w = softmax([cos(cells[r, m], teacher[r]) for m in range(4)], 1.0)
        pooled = sum(w[m] * cells[r, m] for m in range(4))
        per.append(1 - cos(pooled, teacher[r]))
    assert weighted.item() == pytest.approx(2.0 * ((per[0] + per[1]) / 2 + per[2]) / 2, rel=1e-5)
    with pytest.raises(ValueError, match='one cell per region'):
        ContentDistillLoss(pooling='1x1')(cells, teacher, counts)


def test_region_correlation():
    g = torch.Generator().manual_seed(3)
    s_cells, v_cells = torch.randn(2, 4, 6, generator=g), torch.randn(2, 4, 5, generator=g)
    got = RegionCorrelationLoss(tau=0.5, loss_weight=0.05, average='image')(s_cells, v_cells, [1, 1])
    per = []
    for r in range(2):
        rs, rv = cos_matrix(s_cells[r]), cos_matrix(v_cells[r])
        per.append(sum(kl(softmax(rv[i], 0.5), softmax(rs[i], 0.5)) for i in range(4)) / 4)
    assert got.item() == pytest.approx(0.05 * sum(per) / 2, rel=1e-5)
    batch = RegionCorrelationLoss(tau=0.5, loss_weight=0.05)(s_cells, v_cells, [2, 0])
    assert batch.item() == pytest.approx(0.05 * sum(per) / 2, rel=1e-5)
    with pytest.raises(ValueError, match='differ in regions or cells'):
        RegionCorrelationLoss()(s_cells, v_cells[:, :3], [1, 1])
    with pytest.raises(ValueError, match="average must be one of"):
        RegionCorrelationLoss(average='regions')
