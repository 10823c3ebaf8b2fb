"""Deployment: ONNX export of the dense image encoder and the text tower, and running an export with onnxruntime
behind the towers' interfaces (docs/inference.md "Export and deployment").

    onnx_export.py     export_onnx: the export folder (graphs, declip_onnx.json, an optional baked vocabulary)
    onnx_runtime.py    OnnxImageEncoder, OnnxTextEncoder, read_manifest: an export as the user APIs' towers
"""
from .onnx_export import OnnxExportError, export_onnx
from .onnx_runtime import OnnxImageEncoder, OnnxTextEncoder, is_onnx_export, read_manifest

__all__ = ['export_onnx', 'OnnxExportError', 'OnnxImageEncoder', 'OnnxTextEncoder', 'read_manifest', 'is_onnx_export']
