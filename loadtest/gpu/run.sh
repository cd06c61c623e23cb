#!/usr/bin/env bash
# Run on the GPU machine, in the repository's top folder, after the wheel parts have arrived (see the README's
# GPU section): joins the split wheels, installs what the machine lacks into /tmp/site (its own PyTorch, CUDA
# libraries and tokenizers stay), and runs every GPU check; the results land in $1 (default ./gpu-results).
set -euo pipefail
cd "$(dirname "$0")/../.."
RESULTS=${1:-gpu-results}
PARTS=${PARTS_DIR:-/tmp/wheel-parts}
mkdir -p "$PARTS"
for folder in .whl-gpu-part-*; do [ -d "$folder" ] && cp "$folder"/* "$PARTS"/; done
for first in "$PARTS"/*.whl.part-00; do
  [ -e "$first" ] || continue
  cat "${first%.part-00}".part-* > ".whl-gpu/$(basename "${first%.part-00}")"
done
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl-gpu/*.whl
export PYTHONPATH="/tmp/site:$PWD/client:$PWD/build:$PWD/model_repository:$PWD/loadtest"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
python3 -c "import onnxruntime as ort; ort.preload_dlls(); print(ort.__version__, ort.get_available_providers())"
python3 -m trocr_loadtest.gpu_check --output "$RESULTS"
