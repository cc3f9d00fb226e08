#!/usr/bin/env bash
# Download the files the seed (LEARN / RecFormer READMEs) points to, with `python -m learn download`
# (resumable, verified, atomic). Needs network access to Google Drive; never run by the tests.
#   bash scripts/download_checkpoints.sh [all|checkpoints|pretrain|finetune] [ROOT]
# ROOT defaults to data/downloads (git-ignored). Rerunning resumes or skips what is already there.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

what=${1:-all}
ROOT=${2:-${LEARN_DOWNLOADS:-data/downloads}}
source scripts/python.sh

# ---------------------------------------------------------------------------------------------------------------
# Every source in one place: name | source | target folder | expected size | sha256
# Sizes and checksums are not published anywhere we could read: "unknown" means not verified (only the transfer
# length is). Fill in a sha256 once a download is known to be good and `learn download` will check it.
#
# checkpoints: the LEARN README's "checkpoints" Drive folder (a LEARN checkpoint and item embeddings for
#              Instruments; LEARN README, github.com/adxcreative/LEARN @ 2fc1404).
# pretrain:    RecFormer's processed pretraining data (RecFormer README: "download the processed data from here").
# finetune:    RecFormer's processed finetuning data, all six downstream datasets (RecFormer README).
# NOTE: the LEARN README labels these two ids the other way round ("pretrain data" -> 123AH..., "finetuning data"
#       -> 11wTD...) and also calls 11wTD... "the item embedding files"; we follow RecFormer's README, which
#       describes its own uploads. Check the contents after downloading.
SOURCES=(
  "checkpoints|https://drive.google.com/drive/folders/12QXyYftF0r06ie2j9kc6XPbOpgA78dQN|$ROOT/learn_checkpoints|unknown|unknown"
  "pretrain|https://drive.google.com/file/d/11wTD3jMoP_Fb5SlHfKr28NIMCnG_jOpy/view|$ROOT/recformer_pretrain_data|unknown|unknown"
  "finetune|https://drive.google.com/file/d/123AHjsvZFTeT_Mhfb81eMHvnE8fbsFi3/view|$ROOT/recformer_finetune_data|unknown|unknown"
)
# ---------------------------------------------------------------------------------------------------------------

case "$what" in all|checkpoints|pretrain|finetune) ;; *)
  echo "usage: bash scripts/download_checkpoints.sh [all|checkpoints|pretrain|finetune] [ROOT]" >&2; exit 2;;
esac

for entry in "${SOURCES[@]}"; do
  IFS='|' read -r name source target size sha <<<"$entry"
  [ "$what" = all ] || [ "$what" = "$name" ] || continue
  echo "== $name: $source -> $target (expected size: $size)"
  args=(download "$source" --to "$target" --extract)  # --extract unpacks archives, leaves other files as they are
  [ "$sha" = unknown ] || args+=(--sha256 "$sha")
  "$PY" -m learn "${args[@]}"
done
