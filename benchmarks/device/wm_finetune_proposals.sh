#!/bin/bash
# Fine-tune the shipped world model on a lent GPU (one `device` call, about 9 minutes on an H100):
# regenerate a mix of episode stores on the machine's CPU cores (the default cycle, the planner's
# own proposals `--kinds G`, replays `--kinds X`), then `wmgym train-wm` with large batches for
# whatever time is left, and copy the EMA model and the logs to $OUT. Sizes are overridable for a
# dry run on a CPU, e.g.
#   OUT=/tmp/out ND=20 NG=20 NX=10 WD=1 WG=1 WX=1 BATCH=8 NW=0 DEV=cpu BUDGET=200 bash benchmarks/device/wm_finetune_proposals.sh
# On the device, with wheels (cp312, manylinux x86_64) of the packages its image lacks in .whl/:
# lpips tyro typeguard docstring-parser zarr numcodecs google-crc32c donfig stable-baselines3
# gymnasium farama-notifications diffusers importlib_metadata msgspec (zarr >= 3.4) -- not huggingface-hub: the image's
# 1.x suits diffusers, and a 2.x breaks the image's transformers, which diffusers imports.
#   run(command="bash benchmarks/device/wm_finetune_proposals.sh", carry=[".whl"], timeout_s=590)
# Measured on an H100 (2026-11-27): generating the default sizes took ~155 s on its 16 cores,
# training ran at ~26 steps/s (batch 256, bf16). On an H200 (stage 4, 2026-11-27, starting from
# the shipped stage 3): ND=1200 NG=2200 NX=400 BUDGET=480 generated in 205 s and trained 5,436
# steps; a second call on the warm machine reused its stores and ran the same train-wm with
# --init-from that model --warmup-steps 100 --stop-after-minutes 3.6 (5,682 steps, ~26 steps/s).
# GW=8 weighs the loss near the grippers 9x (`train-wm --gripper-loss-weight`); PC=1 adds the
# grippers' 3-D pose vector as a condition (`train-wm --pose-conditioning`, read through an
# embedding into each frame's adaLN conditioning; PI=channels for the constant condition channels
# of the first try); FR=4 draws the windows that start at frames 2-5 of their episode (the grasp
# and lift) 4 times per epoch (`train-wm --focus-window-starts 2 5 --focus-repeats 4`); PLR=10
# multiplies the pose embedding's learning rate (`--pose-lr-scale`); INIT picks the model to start
# from (default the shipped one).
set -x
: ${OUT:=/tmp/out} ${ND:=2000} ${NG:=1600} ${NX:=400} ${WD:=5} ${WG:=9} ${WX:=2}
: ${BATCH:=256} ${LR:=3e-4} ${NW:=6} ${DEV:=cuda} ${BUDGET:=540} ${GW:=0} ${PC:=0} ${PI:=embedding} ${INIT:=wmgym/assets/wmfold/world_model}
: ${FR:=1} ${PLR:=1}
POSE=""; [ "$PC" = 1 ] && POSE="--pose-conditioning --pose-input $PI --pose-lr-scale $PLR"
[ "$FR" != 1 ] && POSE="$POSE --focus-window-starts 2 5 --focus-repeats $FR"
mkdir -p $OUT
T0=$(date +%s)
stamp() { echo "=== $1 at $(( $(date +%s) - T0 )) s" | tee -a $OUT/times.txt; }
if ! python3 -c "import zarr, diffusers, gymnasium, tyro, lpips, stable_baselines3" 2>/dev/null; then
  rm -rf /tmp/site  # a warm machine keeps the last call's; --upgrade --target would not remove extras
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
  python3 -c "import zarr, diffusers, gymnasium, tyro, lpips, stable_baselines3" || exit 1
fi
mkdir -p /tmp/bin && printf '#!/bin/bash\nexec python3 -m wmgym.cli "$@"\n' > /tmp/bin/wmgym && chmod +x /tmp/bin/wmgym
export PATH=/tmp/bin:$PATH PYTHONPATH=$PWD:${PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi -L 2>/dev/null; python3 -c "import torch, wmgym; print(torch.__version__, torch.cuda.is_available())" || exit 1
D=/tmp/wmft/data R=/tmp/wmft/run; rm -rf /tmp/wmft; mkdir -p $D $R
stamp start
wmgym generate --out $D/demo.zarr --episodes $ND --seed 1 --workers $WD --no-show-progress > $R/gen_demo.log 2>&1 &
wmgym generate --out $D/proposal.zarr --episodes $NG --kinds G --seed 9 --workers $WG --no-show-progress > $R/gen_proposal.log 2>&1 &
wmgym generate --out $D/replay.zarr --episodes $NX --kinds X --seed 5 --workers $WX --no-show-progress > $R/gen_replay.log 2>&1 &
wait
ls $D/*.zarr > /dev/null || exit 1
python3 - $D/*.zarr <<'PY' 2>&1 | tee $OUT/gen.log
import sys, numpy as np
from wmgym.data.store import EpisodeStore
for path in sys.argv[1:]:
    meta = EpisodeStore.open(path, mode="r").root["meta"]
    success = np.asarray(meta["episode_success"][:])
    print(f"{path}: {len(success)} episodes, {success.mean():.1%} successful")
PY
stamp generated
# Train for what is left of the budget (45 s kept for loading the data and copying the results).
MINUTES=$(python3 -c "print(round(max(0.5, ($BUDGET - $(( $(date +%s) - T0 )) - 45) / 60), 2))")
wmgym train-wm --data $D/demo.zarr --extra-data $D/proposal.zarr $D/replay.zarr --out $R/wm \
  --steps 1000000 --stop-after-minutes $MINUTES --lr-schedule constant --batch-size $BATCH --learning-rate $LR \
  --warmup-steps 200 --mixed-precision bf16 --init-from $INIT --condition-views grippers --gripper-loss-weight $GW $POSE \
  --checkpoint-every 100000 --validate-every 1000 --val-batches 2 --log-every 100 --device $DEV --num-workers $NW \
  2>&1 | tr '\r' '\n' | grep -v "^train-wm:" > $OUT/train.log
tail -n 5 $OUT/train.log
stamp trained
mkdir -p $OUT/model && cp $R/wm/checkpoints/$(cat $R/wm/latest)/model/* $OUT/model/ && cp $R/wm/log.jsonl $OUT/
ls -la $OUT $OUT/model
stamp end
