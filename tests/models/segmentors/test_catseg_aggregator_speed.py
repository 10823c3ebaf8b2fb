"""The faster CAT-Seg class aggregation (docs/benchmarks.md, "Profiles") against the code it replaced.

``linear_attention`` lays each operand out by head once and runs the feature map and the scalings in place: the
same operations in the same order as the three einsums before it, so bit for bit equal. ``ClassAggregation`` now
projects q / k as ``x @ Wx^T + (guidance @ Wg^T + b)`` with the per-image text guidance (no concatenation, no
repeated guidance), queries only the T class slots (the padding slots stay keys and values) and runs the MLP on them
only: equal to the old forward up to rounding, gradients included."""
import pytest
import torch
import torch.nn.functional as F

from declip_mm.models.segmentors.catseg_aggregator import ClassAggregation, linear_attention


def old_linear_attention(q, k, v, eps: float = 1e-6):
    """The implementation before the change (git b1e55ea)."""
    q, k = F.elu(q) + 1, F.elu(k) + 1
    length = v.shape[1]
    kv = torch.einsum('nshd,nshe->nhde', k, v / length)
    z = 1 / (torch.einsum('nlhd,nhd->nlh', q, k.sum(dim=1)) + eps)
    return torch.einsum('nlhd,nhde,nlh->nlhe', q, kv, z) * length


def old_class_aggregation(module: ClassAggregation, x, guidance, pool):
    """``ClassAggregation.forward`` before the change (git b1e55ea): concatenated [x, repeated guidance], every
    padded slot queried and sent through the MLP, then dropped."""
    att = module.attention
    b, c, t, h, w = x.shape
    pooled = F.avg_pool2d(x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w), tuple(pool))
    hp, wp = pooled.shape[-2:]
    seq = pooled.view(b, t, c, hp * wp).permute(0, 3, 1, 2).reshape(b * hp * wp, t, c)
    g = guidance.repeat_interleave(hp * wp, dim=0)
    if t < module.pad_len:
        seq = torch.cat([seq, module.padding_tokens.expand(seq.shape[0], module.pad_len - t, c)], dim=1)
        g = torch.cat([g, module.padding_guidance.expand(g.shape[0], module.pad_len - t, -1)], dim=1)
    xn = module.norm1(seq)
    xg = torch.cat([xn, g], dim=-1)
    n, length, _ = xn.shape
    q, k, v = (u.view(n, length, att.heads, c // att.heads) for u in (att.q(xg), att.k(xg), att.v(xn)))
    seq = seq + old_linear_attention(q, k, v).reshape(n, length, c)
    mlp = module.MLP
    seq = (seq + mlp[2](F.relu(mlp[0](module.norm2(seq)))))[:, :t]
    out = seq.view(b, hp, wp, t, c).permute(0, 3, 4, 1, 2).reshape(b * t, c, hp, wp)
    out = F.interpolate(out, size=(h, w), mode='bilinear', align_corners=True)
    return x + out.view(b, t, c, h, w).permute(0, 2, 1, 3, 4)


def aggregation(pad_len: int, dim: int = 32, guidance_dim: int = 16) -> ClassAggregation:
    torch.manual_seed(0)
    module = ClassAggregation(dim, guidance_dim, 4, pad_len)
    with torch.no_grad():
        for p in module.parameters():                  # no zero / unit parameters: padding and norms matter
            p.normal_(0, 0.3)
    return module


@pytest.mark.parametrize('queries', [256, 20, 1])
@pytest.mark.parametrize('heads', [4, 1])
def test_linear_attention_is_bitwise_the_three_einsums(queries, heads):
    g = torch.Generator().manual_seed(queries + heads)
    q = torch.randn(6, queries, heads, 32, generator=g) * 2
    k, v = (torch.randn(6, 256, heads, 32, generator=g) * 2 for _ in range(2))
    inputs = [t.clone() for t in (q, k, v)]
    for grad in (False, True):
        with torch.set_grad_enabled(grad):
            got = linear_attention(q, k, v)
        assert got.shape == (6, queries, heads, 32)
        assert torch.equal(got, old_linear_attention(q, k, v))
    assert all(torch.equal(a, b) for a, b in zip((q, k, v), inputs))   # the in-place steps work on copies


def test_linear_attention_gradients_equal_the_einsums():
    g = torch.Generator().manual_seed(1)
    leaves = [torch.randn(3, n, 4, 8, generator=g, requires_grad=True) for n in (5, 16, 16)]
    weight = torch.randn(3, 5, 4, 8, generator=g)
    (linear_attention(*leaves) * weight).sum().backward()
    got = [t.grad.clone() for t in leaves]
    for t in leaves:
        t.grad = None
    (old_linear_attention(*leaves) * weight).sum().backward()
    for a, t in zip(got, leaves):
        torch.testing.assert_close(a, t.grad, rtol=1e-5, atol=1e-6)
    double = [t.detach().double().requires_grad_() for t in leaves]
    assert torch.autograd.gradcheck(linear_attention, double)


CASES = [dict(pad_len=16, t=5, b=2, hw=4, pool=(2, 2)),      # training: padded, pooled
         dict(pad_len=16, t=5, b=2, hw=4, pool=(1, 1)),      # test
         dict(pad_len=16, t=16, b=1, hw=4, pool=(1, 1)),     # as many classes as slots
         dict(pad_len=0, t=7, b=2, hw=4, pool=(1, 1))]       # no padding


@pytest.mark.parametrize('case', CASES, ids=lambda c: f"pad{c['pad_len']}-t{c['t']}-pool{c['pool'][0]}")
def test_class_aggregation_equals_the_old_forward(case):
    module = aggregation(case['pad_len'])
    g = torch.Generator().manual_seed(2)
    b, t, hw = case['b'], case['t'], case['hw']
    x = torch.randn(b, 32, t, hw, hw, generator=g)
    guidance = torch.randn(b, t, 16, generator=g)
    with torch.no_grad():
        want = old_class_aggregation(module, x, guidance, case['pool'])
        got = module(x, guidance, case['pool'])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_class_aggregation_gradients_equal_the_old_forward():
    """Training (pool 2x2, padded): the in-place steps keep autograd valid and every parameter, the padding slots
    and the guidance half of the q / k weights included, gets the old gradient."""
    module = aggregation(16)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 32, 5, 4, 4, generator=g)
    guidance = torch.randn(2, 5, 16, generator=g)
    weight = torch.randn(2, 32, 5, 4, 4, generator=g)
    grads = []
    for forward in (module.forward, lambda *a: old_class_aggregation(module, *a)):
        module.zero_grad()
        inputs = [x.clone().requires_grad_(), guidance.clone().requires_grad_()]
        (forward(*inputs, (2, 2)) * weight).sum().backward()
        grads.append({**{n: p.grad.clone() for n, p in module.named_parameters()},
                      'x': inputs[0].grad, 'guidance': inputs[1].grad})
    new, old = grads
    assert new.keys() == old.keys()
    for name in old:
        assert new[name].abs().sum() > 0, name
        torch.testing.assert_close(new[name], old[name], rtol=1e-4, atol=1e-5, msg=name)
