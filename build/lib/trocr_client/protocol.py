"""The public API of the `trocr` Triton model, shared by the server and its clients.

Other services call the `trocr` model with any KServe v2 client, so these names are a contract.
This module imports nothing heavy: the server-side models import it too.
"""

from __future__ import annotations

from dataclasses import dataclass

MODEL_NAME = "trocr"

# KServe's datatypes of the tensors of this project's models, and numpy's name for each.
NUMPY_TYPES = {"BYTES": "object", "INT32": "int32", "BOOL": "bool", "FP32": "float32", "UINT8": "uint8"}


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of a model's contract, declared once: the build generates the model's config from it, the
    client checks the served model against it and builds its requests with it, the model writes its responses
    with it."""

    name: str
    datatype: str  # KServe's (a key of NUMPY_TYPES)
    shape: tuple[int, ...]  # as sent or returned, -1 variable; the first dimension is the images
    optional: bool = False  # an input the caller may leave out

    @property
    def numpy_dtype(self) -> str:
        return NUMPY_TYPES[self.datatype]

    @property
    def per_image(self) -> bool:
        """One value per image, sent as [images, 1] (the KServe shape of a batched model); the model reads [images]."""
        return self.shape == PER_IMAGE


PER_IMAGE = (-1, 1)

# Inputs (one value per batch row).
INPUT_IMAGE = "image"  # BYTES: one encoded image (PNG, JPEG, TIFF, BMP, WebP)
INPUT_MAX_NEW_TOKENS = "max_new_tokens"  # INT32, optional
INPUT_NUM_BEAMS = "num_beams"  # INT32, optional
INPUT_IGNORE_EOS = "ignore_eos"  # BOOL, optional; benchmarks only: generate exactly max_new_tokens

INPUTS = (
    TensorSpec(INPUT_IMAGE, "BYTES", PER_IMAGE),
    TensorSpec(INPUT_MAX_NEW_TOKENS, "INT32", PER_IMAGE, optional=True),
    TensorSpec(INPUT_NUM_BEAMS, "INT32", PER_IMAGE, optional=True),
    TensorSpec(INPUT_IGNORE_EOS, "BOOL", PER_IMAGE, optional=True),
)

# Request-level KServe `parameters` the model takes, for callers without per-row tensors (JSON over HTTP, any
# KServe client): max_new_tokens, num_beams and ignore_eos apply to every image (send each either as a tensor
# or as a parameter), and image_encoding says how `image` holds the bytes.
PARAMETER_IMAGE_ENCODING = "image_encoding"  # "binary" (default): the file's bytes; "base64": their base64 text
IMAGE_ENCODINGS = ("binary", "base64")
REQUEST_PARAMETERS = (INPUT_MAX_NEW_TOKENS, INPUT_NUM_BEAMS, INPUT_IGNORE_EOS, PARAMETER_IMAGE_ENCODING)

# Outputs (one value per batch row).
OUTPUT_TEXT = "text"  # BYTES: UTF-8 text
OUTPUT_SCORE = "score"  # FP32: mean log-probability of the generated tokens (end-of-sequence included)
OUTPUT_TOKEN_IDS = "token_ids"  # INT32 [rows, longest]: generated ids (end-of-sequence included), -1 padded
TOKEN_IDS_PADDING = -1
# Per image: a request whose images are all bad fails as a whole (INVALID_ARGUMENT); otherwise every image
# gets its own answer, and a bad one its own error beside its neighbours' texts.
OUTPUT_ERROR_CODE = "error_code"  # INT32: 0 when transcribed, else the gRPC status code this image alone would get
OUTPUT_ERROR = "error"  # BYTES: empty when transcribed, else the message naming the image's problem
OUTPUTS = (
    TensorSpec(OUTPUT_TEXT, "BYTES", PER_IMAGE),
    TensorSpec(OUTPUT_SCORE, "FP32", PER_IMAGE),
    TensorSpec(OUTPUT_TOKEN_IDS, "INT32", (-1, -1)),
    TensorSpec(OUTPUT_ERROR_CODE, "INT32", PER_IMAGE),
    TensorSpec(OUTPUT_ERROR, "BYTES", PER_IMAGE),
)
SPECS = {spec.name: spec for spec in (*INPUTS, *OUTPUTS)}
ALL_IMAGES_BAD = "every image of the request is bad"  # how an INVALID_ARGUMENT for that case begins
ERROR_CODE_OK = 0
ERROR_CODE_INVALID_ARGUMENT = 3  # gRPC INVALID_ARGUMENT: an image that cannot be decoded or is out of bounds

# A deadline the server enforces (the KServe `timeout` parameter, else its default) comes back as UNAVAILABLE
# (Triton's Python backend has no DEADLINE_EXCEEDED code) with a message holding one of these: the server's
# own while decoding, Triton's while the request waited in its queue. Clients map both to a deadline error.
DEADLINE_MESSAGES = ("deadline exceeded", "Request timeout expired")

# Limits the server enforces on every image; the client checks them before sending.
MAX_IMAGE_BYTES = 20 * 1024 * 1024
MAX_IMAGE_PIXELS = 40_000_000  # width x height; larger is refused before decoding (decompression bombs)
MAX_IMAGES_PER_REQUEST = 64
# Per request, summed over its images: decoding is bounded by pixels, not by the compressed size (a 1.5 MB
# request of 32 36-megapixel PNGs decoded to 4.4 GB before this bound).
MAX_REQUEST_BYTES = 64 * 1024 * 1024
MAX_REQUEST_PIXELS = 100_000_000
MAX_NUM_BEAMS = 16

SUPPORTED_IMAGE_FORMATS = ("PNG", "JPEG", "TIFF", "BMP", "WEBP")
