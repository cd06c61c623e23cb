"""Names of the status outputs a BLS-called model uses to keep its status code (see triton_adapters.bls)."""

STATUS_CODE = "status_code"  # BYTES [1]: a pb_utils.TritonError code name, e.g. "UNAVAILABLE"
STATUS_MESSAGE = "status_message"  # BYTES [1]
STATUS_REASON = "status_reason"  # BYTES [1]: the refusal's reason (trocr_serving.refusals), kept for the metrics
STATUS_OUTPUTS = (STATUS_CODE, STATUS_MESSAGE, STATUS_REASON)
