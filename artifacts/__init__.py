"""A trained model as build-time artifacts: the SavedModel export and its warm-up records, the
other formats (Keras, ONNX, TFLite) converted and parity-checked against it, and loading one
version to run it (the evaluator, batch prediction and the server all load through here)."""
