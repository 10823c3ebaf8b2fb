"""Filled by a later issue (see README's layout); nothing is registered here yet."""
from .load_labels import LoadFullRangeAnnotations, check_label_values, decode_label_array  # noqa: F401
