#!/usr/bin/env bash
# Train the zoo's models on the standard training sets (the recipes their cards record).
# usage: tools/train_zoo.sh DATA_DIR [NAME …]   (DATA_DIR: the data root holding BSD400/ and Train400/, or where `restore-nb data` downloads them)
# Each run lands in runs/zoo/NAME; a run that stopped part-way is resumed from its last checkpoint.
set -euo pipefail
export RESTORE_NB_DATA=${1:?usage: tools/train_zoo.sh DATA_DIR [NAME …]}   # std:NAME resolves under it
shift
NAMES=("$@")
[ ${#NAMES[@]} -eq 0 ] && NAMES=(denoise-rgb denoise-gray sr-x2 sr-x4 demosaic-bayer demosaic-xtrans deblur-unrolled deblur-blind)
# deblurring excludes motion angles 35-55 degrees, the benchmark's unseen angles
declare -A RECIPE=(
  [denoise-rgb]="denoise --data std:BSD400 --model tiny --sigma_range 0,50 --size 64 --bs 8 --n_train 1024 --minutes 25"
  [denoise-gray]="denoise --data std:Train400 --gray --model tiny --sigma_range 0,50 --size 64 --bs 8 --n_train 1024 --minutes 10"
  [sr-x2]="sr --data std:BSD400 --model tiny --scale 2 --size 64 --bs 8 --n_train 1024 --minutes 8"
  [sr-x4]="sr --data std:BSD400 --model tiny --scale 4 --size 64 --bs 8 --n_train 1024 --minutes 8"
  [demosaic-bayer]="demosaic --data std:BSD400 --cfa bayer --sigma 10 --size 48 --bs 16 --n_train 1024 --minutes 8"
  [demosaic-xtrans]="demosaic --data std:BSD400 --cfa xtrans --sigma 10 --size 48 --bs 16 --n_train 1024 --minutes 8"
  [deblur-unrolled]="deblur --data std:BSD400 --model unrolled --exclude_angles 35,55 --size 64 --bs 8 --n_train 512 --minutes 10"
  [deblur-blind]="deblur --data std:BSD400 --model blind --exclude_angles 35,55 --size 64 --bs 8 --n_train 512 --minutes 8"
)
for n in "${NAMES[@]}"; do
  r=${RECIPE[$n]:?unknown model $n}
  out=runs/zoo/$n
  if [ -f "$out/model.safetensors" ]; then echo "$n: done ($out)"; continue; fi
  resume=""; [ -d "$out/checkpoints" ] && resume="--resume"
  echo "$n: restore-nb train $r --out $out $resume"
  restore-nb train $r --out "$out" $resume
done
