"""The ablation report on hand-made results: rows per (variant, teacher), the paper's checks as pass / fail."""
from pathlib import Path

import pytest

from projects.proof_world.proof_world.reporting import checks, format_checks, format_table, rows, summary
from projects.proof_world.proof_world.running import AblationResult
from projects.proof_world.proof_world.variants import ProofInputs


def _result(teacher, values):
    """values: variant -> list of (mIoU, region top-1) per seed."""
    inputs = ProofInputs(world_root=Path('.'), model_name='m', clip_checkpoint='c', vfm_teacher={}, class_names=['a'],
                         thing_classes=['a'], teacher=teacher)
    result = AblationResult(inputs, [0, 1, 2])
    for key, seeds in values.items():
        result.rows[key] = [dict(mIoU=m, region_top1=r, region_top5=r + 40) for m, r in seeds]
    return result


@pytest.fixture
def results():
    return {'-': _result('oracle', {'vanilla': [(2.0, 1.0)], 'content_only': [(18.0, 20.0), (18.2, 20.4), (18.1, 20.2)]}),
            'oracle': _result('oracle', {'joint': [(19.0, 14.0), (19.2, 14.4), (19.1, 14.2)],
                                         'declip': [(21.0, 24.0), (21.2, 24.4), (21.1, 24.2)],
                                         'declip_sd': [(21.0, 24.0), (21.1, 24.0), (21.2, 24.0)]}),
            'infonce': _result('infonce', {'joint': [(19.0, 14.0)] * 3, 'declip': [(17.0, 12.0), (17.5, 12.5), (17.2, 12.2)]})}


def test_rows_follow_the_variant_order_then_the_teachers(results):
    assert rows(results) == [('-', 'vanilla'), ('-', 'content_only'), ('oracle', 'joint'), ('infonce', 'joint'),
                             ('oracle', 'declip'), ('infonce', 'declip'), ('oracle', 'declip_sd')]
    table = format_table(results).splitlines()
    assert table[2].startswith('| vanilla CLIP | - | `vanilla` | - | 2.0 | 1.0 |')
    assert '| DeCLIP | oracle (labels) | `csa` | 3 | 21.1 ± 0.1 | 24.2 ± 0.2 |' in table[6]


def test_checks_pass_and_fail_where_the_numbers_say(results):
    got = {(c['kind'], c['teacher']): c['passed'] for c in checks(results)}
    assert got[('distilled', 'oracle')] is True and got[('distilled', 'infonce')] is True
    assert got[('recovers', 'oracle')] is True            # content 20.2 > joint 14.2 and DeCLIP 24.2 > joint
    assert got[('recovers', 'infonce')] is False          # DeCLIP 12.2 < joint 14.0
    assert got[('sd_adds', 'oracle')] is False            # 21.1 vs 21.1
    assert ('sd_adds', 'infonce') not in got              # no SD row for that teacher
    for kind in ('content_mIoU', 'content_region_top1', 'joint_mIoU', 'joint_region_top1'):
        assert got[(kind, 'oracle')] is True, kind        # gaps of 2-10 over standard deviations of 0.1-0.2
    assert got[('content_mIoU', 'infonce')] is False
    table = format_checks(results).splitlines()
    assert table[0] == '| check | oracle (labels) | label-free InfoNCE |'
    assert any(line.startswith('| SD-GSC adds on top') and line.endswith('| FAIL | - |') for line in table)
    assert '| PASS (+3.0, > 3 std asked) |' in format_checks(results)
    facts = summary(results)
    assert facts['declip_minus_content_only[oracle]'] == pytest.approx(3.0)
    assert facts['declip_minus_best_training_free[infonce]'] == pytest.approx(17.2333 - 2.0, abs=1e-3)


def test_three_standard_deviations_are_required_of_the_oracle(results):
    results['oracle'].rows['declip'] = [dict(mIoU=m, region_top1=r, region_top5=0)
                                        for m, r in [(18.0, 24.0), (21.0, 24.4), (24.3, 24.2)]]   # mIoU std 2.6
    passed = {c['kind']: c['passed'] for c in checks(results) if c['teacher'] == 'oracle'}
    assert passed['content_mIoU'] is False and passed['content_region_top1'] is True


def test_run_ablation_defaults_full_and_reduced():
    import importlib.util

    from projects.proof_world.proof_world.experiment import (CHOSEN_CONTEXT_WEIGHT, CONTEXT_WEIGHTS, DEMO_TEACHERS,
                                                             DEMO_VARIANTS, FULL_TEACHERS)
    from projects.proof_world.proof_world.variants import VARIANTS
    path = Path(__file__).resolve().parents[1] / 'tools' / 'run_ablation.py'
    spec = importlib.util.spec_from_file_location('run_ablation_tool', path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    full = tool.parse_args(['--full'])
    assert full.teachers == list(FULL_TEACHERS) and full.seeds == [0, 1, 2]
    assert full.variants == [v.key for v in VARIANTS] and full.select_weights == list(CONTEXT_WEIGHTS)
    reduced = tool.parse_args([])
    assert reduced.teachers == list(DEMO_TEACHERS) and reduced.variants == list(DEMO_VARIANTS)
    assert reduced.select_weights == [CHOSEN_CONTEXT_WEIGHT] and reduced.seeds == [0, 1]
    assert tool.parse_args(['--full', '--context-weight', '1.0']).select_weights == [1.0]
    assert tool.parse_args(['--select-weights']).select_weights == []
    with pytest.raises(SystemExit):
        tool.parse_args(['--teachers', 'clip'])
