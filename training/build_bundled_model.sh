#!/usr/bin/env bash
# Rebuild the bundled model from scratch: synthetic data -> stage 0 (text LLM, reading, vision tower) -> stages 1-5
# -> qwen_vl/assets/model -> held-out scores. 116 minutes on stop 38's 2-core CPU (see
# docs/bundled_model.md for the measured times of each step).
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "[$(date +%H:%M:%S)] $*"; }  # each step's start, so the log times the build

say "data"

# 1. the synthetic world: training sets (two seeds) and held-out sets (unseen seeds and frame rates);
#    two processes draw the same bytes as one, in half the time. The vision step's captions span the
#    world's full size range (up to 1,024 px a side); the stages' sets stop at 448 px, whose pictures cost
#    fewer tokens
synthetic() { python -m training.synthetic --workers 2 --quiet "$@"; }
synthetic --out data/bundled/train --task all --n 3000 --seed 12 --max-size 448
synthetic --out data/bundled/train_full --task caption --n 3000 --seed 12 --max-size 1024
for task in caption vqa ocr; do
    synthetic --out data/bundled/train2 --task "$task" --n 6000 --seed 13 --max-size 448
done
synthetic --out data/bundled/train2 --task video --n 4000 --seed 13
synthetic --out data/bundled/heldout --task all --n 200 --seed 1001
synthetic --out data/bundled/heldout_fps --task video --n 200 --seed 1002 --fps-set 7,23

# 2. stage 0: a text-only Qwen2 LLM (and the tokenizer) on the world's language and chat turns;
#    stage 0b: it learns to read scenes laid out as grids of its own word embeddings (four questions
#    per grid, one head told where the asked shape lies, a probe at the answer told the asked colour and
#    the found shape's colour and third);
#    then the vision tower learns to put those words on its tokens, as the grid holds them (and the
#    scenes' other labels)
say "stage 0, LLM"
python -m training.pretrain_llm --out runs/bundled/llm --steps 500 --lines 20000 --chats 12000 --min-pixels 50176
say "stage 0b, reading"
python -m training.pretrain_reading --llm runs/bundled/llm --out runs/bundled/llm_read --steps 1500 --turns 4 --lookup-weight 1 \
    --compare-weight 1
say "stage 0, vision"
python -m training.pretrain_vision --config training/configs/bundled/stage1.yaml --steps 1800 \
    --word-heads --pooled-weight 1 --word-drills 0 --drill-sizes log --grid-weight 1 \
    --data data/bundled/train_full/caption.jsonl data/bundled/train/{vqa,ocr}.jsonl data/bundled/train2/ocr.jsonl \
    --heldout data/bundled/heldout/{caption,ocr}.jsonl

# 3. stages 1-3 (stage 1 builds the VL model with from_llm and the pre-trained tower),
#    then stage 4, a last pass with everything learning, and stage 5, the tower fitted to the final LLM
for stage in 1 2 3 4 5; do
    say "stage $stage"
    python -m training.train --config "training/configs/bundled/stage$stage.yaml" --set progress=false
done

# 4. install it in the package and score it on the held-out sets
say "install"
python -m training.install_bundled runs/bundled/stage5/final
say "scores"
for task in caption vqa ocr video; do
    python -m eval --task "synthetic-$task" --data "data/bundled/heldout/$task.jsonl" --output "runs/bundled/eval/$task" --no-progress
done
python -m eval --task synthetic-video --data data/bundled/heldout_fps/video.jsonl --output runs/bundled/eval/video_unseen_fps --no-progress
say "done"
