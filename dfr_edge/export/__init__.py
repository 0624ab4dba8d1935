"""Export side: the fused graph to ONNX (FP32, FP16, INT8 Q/DQ) with checks at every step."""
