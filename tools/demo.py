"""`make demo`: open-vocabulary segmentation of the real sample photos (arrives with issue #5)."""
import sys

sys.exit('make demo is not implemented yet: it arrives with the open-vocabulary evaluation issue (#5). '
         'Until then see README.md for what works (make test, tools/train.py, tools/fetch_sample_data.py).')
