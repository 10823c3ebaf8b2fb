"""Data transforms the benchmarks need beyond mmseg's: detectron2's shortest-edge test resize (PIL) and label
loading that keeps 16-bit class ids (A-847, PC-459)."""
from .d2_resize import D2ResizeShortestEdge, d2_resize_image, d2_shortest_edge_shape  # noqa: F401
from .load_labels import LoadFullRangeAnnotations, check_label_values, decode_label_array  # noqa: F401
