#!/usr/bin/env bash
# WMFold-v0 on a lent GPU: benchmarks/env_speed.py with --device cuda at 16 / 256 / 1024 envs, this
# tree against the commit before issue 41, in one run (under 5 minutes on one H100). Run from the
# repository root on the device machine (the `run` tool); the JSON lands in $OUT (default: .).
#
#     bash benchmarks/device/env_speed.sh
set -euo pipefail
OUT="${OUT:-.}"
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))"
pip install -q --no-deps -e . >/dev/null 2>&1 || pip install -q -e .
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
timeout 290 python benchmarks/env_speed.py --device cuda --envs 16 256 1024 --steps 8 --repeats 2 --json "$OUT/env_speed_cuda.json"
