"""The 8 training-free segmentation benchmarks and their summary: ``tools/eval_benchmarks.py --suite training-free``.

    python tools/eval_training_free.py CHECKPOINT [--configs-dir DIR] [--prefix P] [--benchmarks ...] [--out DIR]

The paper's 8-benchmark averages (ViT-B/16): 41.9 (CVPR DeCLIP), 44.1 (journal DeCLIP).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_benchmarks import main  # noqa: E402

if __name__ == '__main__':
    main(['--suite', 'training-free', *sys.argv[1:]])
