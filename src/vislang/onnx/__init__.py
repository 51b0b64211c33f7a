"""ONNX export of a model's two towers and the onnxruntime-backed model that opens it.

``export`` turns the towers into graphs (torch.export, then torch.onnx) and checks them against
PyTorch; ``runtime`` opens such a directory with the API of ``vislang.load``; ``manifest`` is the
``onnx_config.json`` both read. onnx, onnxscript and onnxruntime are the optional ``onnx`` extra,
imported only where a graph is written or run. See docs/onnx.md.
"""
