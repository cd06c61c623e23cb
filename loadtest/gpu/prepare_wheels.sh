#!/usr/bin/env bash
# Run on a machine with PyPI access: fetches the wheels a lent GPU machine lacks (Python 3.12, x86-64) into
# .whl-gpu/ at the repository's top (git-ignored), and splits those too large for one transfer into 60 MB parts
# (.whl-gpu-part-N/), which run.sh joins again. Versions: the last onnxruntime-gpu for CUDA 13 drivers, the
# Triton server the project pins, numpy < 2 for it, and the transformers the build pins.
set -euo pipefail
cd "$(dirname "$0")/../.."
WHEELS=.whl-gpu
rm -rf "$WHEELS" .whl-gpu-part-*
PLATFORMS=()
for platform in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  PLATFORMS+=(--platform "$platform")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${PLATFORMS[@]}" \
  -d "$WHEELS" onnxruntime-gpu==1.31.1 nvidia-pytriton==0.7.0 "numpy<2" transformers==4.57.6 \
  "huggingface-hub<1.0" "tokenizers>=0.22,<0.23" tritonclient==2.51.0 python-rapidjson
# one part per transfer: every wheel over 60 MB is cut into .whl-gpu-part-N/ pieces
part=0
for wheel in "$WHEELS"/*.whl; do
  if [ "$(stat -c %s "$wheel")" -gt 60000000 ]; then
    split -b 60M -d "$wheel" "$wheel.part-"
    rm "$wheel"
    for piece in "$wheel".part-*; do
      part=$((part + 1))
      mkdir -p ".whl-gpu-part-$part"
      mv "$piece" ".whl-gpu-part-$part/"
    done
  fi
done
du -sh "$WHEELS" .whl-gpu-part-* 2>/dev/null
echo "carry $WHEELS with the last call, and each .whl-gpu-part-N in a call of its own before it (see run.sh)"
