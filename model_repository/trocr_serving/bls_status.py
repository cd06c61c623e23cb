"""Names of the status outputs a BLS-called model uses to keep its status code (see trocr_serving.bls)."""

STATUS_CODE = "status_code"  # BYTES [1]: a pb_utils.TritonError code name, e.g. "UNAVAILABLE"
STATUS_MESSAGE = "status_message"  # BYTES [1]
