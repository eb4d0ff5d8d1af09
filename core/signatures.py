"""The SavedModel contract every exported model keeps and every server and client relies on."""

# Bytes in: a 1-D string tensor of encoded images (PNG, JPEG, GIF, BMP), preprocessing in-graph.
SERVING_DEFAULT = "serving_default"
IMAGE_BYTES = "image_bytes"

# Float in: [N, height, width, channels] float32 in [0, 1], already decoded and resized.
PREDICT_IMAGES = "predict_images"
IMAGES = "images"

# Bytes in, the float tensor `predict_images` takes out: the in-graph preprocessing on its own, so
# another runtime (onnxruntime) can run the model on exactly the pixels the SavedModel would.
PREPROCESS = "preprocess_images"

# Outputs of serving_default and predict_images.
SCORES = "scores"  # float32 [N, C] class probabilities
CLASSES = "classes"  # string [N, C] class names aligned with SCORES (label-map order)

# Written next to saved_model.pb: resolved config, label map, dataset version, metrics.
METADATA_DIR = "assets.extra"
METADATA_FILE = "imgclf.json"
# A converted model file's check against its SavedModel is written beside it as <file> + this.
PARITY_SUFFIX = ".parity.json"
