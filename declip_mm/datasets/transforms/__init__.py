"""Filled by a later issue (see README's layout); nothing is registered here yet."""
from .d2_resize import D2ResizeShortestEdge, d2_resize_image, d2_shortest_edge_shape  # noqa: F401
from .load_labels import LoadFullRangeAnnotations, check_label_values, decode_label_array  # noqa: F401
