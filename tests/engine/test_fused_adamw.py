"""The distillation configs' fused AdamW (``fused=True``; docs/benchmarks.md, "Profiles") through mmengine's
OptimWrapper, with the configs' paramwise settings (no decay on 1-D parameters) and frozen parameters, with and
without gradient clipping: the same losses and, up to rounding, the same parameters as the default implementation
(on the CPU the per-tensor loop; ``foreach=True`` gives the loop's result bit for bit)."""
import copy
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper

import declip_mm  # noqa: F401  (registries)

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / 'configs' / 'distill' / 'declip_tiny-vit_tiny-dinov2_sample-photos_cpu.py'


def test_distillation_configs_use_fused_adamw():
    for path in [TINY, *sorted((REPO / 'configs' / 'distill').glob('*_6e.py'))]:
        optimizer = Config.fromfile(str(path)).optim_wrapper.optimizer
        assert optimizer.type == 'AdamW' and optimizer.fused is True, path.name


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.LayerNorm(128), torch.nn.GELU(),
                              torch.nn.Linear(128, 16))
    return torch.nn.ModuleDict(dict(student=net, teacher=torch.nn.Linear(4, 4).requires_grad_(False)))


def train(optimizer_overrides: dict, clip_grad=None, steps: int = 3):
    """``steps`` iterations of the tiny config's optim wrapper (optimizer settings overridden) on a tiny model."""
    cfg = copy.deepcopy(Config.fromfile(str(TINY)).optim_wrapper)
    cfg.optimizer.update(optimizer_overrides)
    if clip_grad is not None:
        cfg.clip_grad = clip_grad
    model = tiny_model()
    wrapper = build_optim_wrapper(model, cfg)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(32, 64, generator=g), torch.randn(32, 16, generator=g)
    losses = []
    for _ in range(steps):
        loss = ((model['student'](x) - y) ** 2).mean()
        wrapper.update_params(loss)
        losses.append(loss.item())
    return model, losses, wrapper


@pytest.mark.parametrize('clip_grad', [None, dict(max_norm=0.01, norm_type=2)], ids=['no-clip', 'clip'])
def test_fused_adamw_matches_the_default_through_the_optim_wrapper(clip_grad):
    fused, fused_losses, wrapper = train({}, clip_grad)                          # the config: fused=True
    assert all(group['fused'] for group in wrapper.optimizer.param_groups)
    decay = {group['weight_decay'] for group in wrapper.optimizer.param_groups}
    assert decay == {0.0, 0.1}                                                    # flat_decay_mult=0.0 still applies
    default, default_losses, _ = train(dict(fused=None), clip_grad)
    foreach, foreach_losses, _ = train(dict(fused=None, foreach=True), clip_grad)
    assert foreach_losses == default_losses
    assert all(torch.equal(a, b) for a, b in zip(foreach.parameters(), default.parameters()))
    assert fused_losses == pytest.approx(default_losses, rel=1e-6)
    diff = max((a - b).abs().max().item() for a, b in zip(fused.parameters(), default.parameters()))
    assert diff < 1e-6, diff                                                      # measured: 4.5e-8 (lr 1e-3)
    moved = max((a - b).abs().max().item() for a, b in zip(fused.parameters(), tiny_model().parameters()))
    assert moved > 1e-3                                                           # the steps did move the weights
    assert torch.equal(fused['teacher'].weight, tiny_model()['teacher'].weight)   # frozen stays frozen
