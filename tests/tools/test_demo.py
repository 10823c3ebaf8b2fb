"""`make demo` (tools/demo.py) end to end: distils the tiny preset, segments the sample photos,
writes overlay pictures and IoU results, and says honestly that random tiny weights are near chance."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_demo_writes_overlays_and_ious(sample_root, tmp_path):
    # the proof of mechanism (docs/proof.md) has its own test, projects/proof_world/tests/test_proof_ablation.py
    proc = subprocess.run([sys.executable, str(REPO / 'tools/demo.py'), '--out', str(tmp_path), '--skip-proof'],
                          capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)), cwd=tmp_path)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert 'near chance by design' in proc.stdout and str(tmp_path) in proc.stdout
    result = json.loads((tmp_path / 'results.json').read_text())
    assert len(result['images']) == 3 and 0 <= result['mIoU'] <= 100
    assert all(0 <= row['mIoU'] <= 100 for row in result['images'])
    for row in result['images']:
        picture = np.array(Image.open(row['overlay']))
        photo = np.array(Image.open(row['image']))
        assert picture.shape[1] == 2 * photo.shape[1] + 8 and picture.shape[0] > photo.shape[0]   # pred | label
    assert (tmp_path / 'distill' / 'declip_backbone_final.pth').is_file()
