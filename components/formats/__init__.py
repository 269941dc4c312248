"""The runtimes a candidate can be built for, one module each behind one small interface
(components.formats.runtime): ONNX through ONNX Runtime (`onnx_rt`), ExecuTorch programs (`pte`), LiteRT files
(`litert`), and TensorFlow Lite Micro's fit of a full-integer LiteRT file (`tflm`)."""
