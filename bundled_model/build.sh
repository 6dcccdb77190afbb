#!/usr/bin/env bash
# Rebuild the bundled model from scratch: synthetic data -> stage 0 (text LLM, reading, vision tower) -> stages 1, 2, 4, 3 (three passes), 5, 6
# -> qwen_vl/assets/model -> held-out scores. See docs/bundled_model.md for the measured times of each step.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "[$(date +%H:%M:%S)] $*"; }  # each step's start, so the log times the build

# Two cores: stage 0b and the vision step run side by side, one thread each (both start from the stage-0
# LLM), and stages 1-5 run as two one-thread processes of batch 4 (the configs' batch of 8 samples,
# split), which is faster than one two-thread process on such small matrices.
tagged() { local tag=$1; shift; "$@" 2>&1 | sed -u "s/^/[$tag] /"; }  # one log, each line says whose it is
kill_tree() { local child; for child in $(pgrep -P "$1"); do kill_tree "$child"; done; kill "$1" 2>/dev/null || true; }
trap 'for job in $(jobs -p); do kill_tree "$job"; done' EXIT  # a failed step stops its partner too

# 1. the synthetic world: training sets (two seeds) and held-out sets (unseen seeds and frame rates);
#    any number of worker processes draws the same bytes. The vision step's captions span the world's
#    full size range (up to 1,024 px a side); the stages' sets stop at 448 px, whose pictures cost
#    fewer tokens
synthetic() { python -m bundled_model.synthetic --workers "${workers:-2}" --quiet "$@"; }
vision_data() {  # what the vision step reads, and stage 1
    synthetic --out data/bundled/train --task all --n 3000 --seed 12 --max-size 448
    synthetic --out data/bundled/train_full --task caption --n 3000 --seed 12 --max-size 1024
    synthetic --out data/bundled/train2 --task ocr --n 6000 --seed 13 --max-size 448
    synthetic --out data/bundled/heldout --task all --n 200 --seed 1001
}
stage_data() {  # the rest: drawn on the core stage 0b frees while the vision step still runs
    local workers=1
    for task in caption vqa; do
        synthetic --out data/bundled/train2 --task "$task" --n 6000 --seed 13 --max-size 448
    done
    synthetic --out data/bundled/train2 --task video --n 4000 --seed 13
    synthetic --out data/bundled/heldout_fps --task video --n 200 --seed 1002 --fps-set 7,23
    for task in caption vqa; do  # stage 6: light backgrounds too; held out: the evaluation-only renderer
        synthetic --out data/bundled/light --task "$task" --n 3000 --seed 14 --max-size 448 --light-backgrounds
        synthetic --out data/bundled/heldout_alt --task "$task" --n 200 --seed 1004 --renderer alt
    done
}

# 2. stage 0: a text-only Qwen2 LLM (and the tokenizer) on the world's language and chat turns;
#    stage 0b: it learns to read scenes laid out as grids of its own word embeddings (four questions
#    per grid, one head told where the asked shape lies, a probe at the answer told the asked colour and
#    the found shape's colour and third; the build stops there when its held-out answers did not form);
#    beside them, the vision tower learns to put those words on its tokens, as the grid holds them (and
#    the scenes' other labels). The embeddings are drawn at random and stay fixed through stages 0 and 0b,
#    so the vision step reads them (and the tokenizer) from the untrained LLM and starts with stage 0
# runs/bundled is the script's own: an earlier build's stages there would make the trainer refuse to start
# over them (it keeps a run's checkpoints unless told --resume), so each build starts from an empty one
rm -rf runs/bundled
say "data"
vision_data
say "stage 0: the LLM, its reading and the stages' data, beside the vision step"
python -m bundled_model.pretrain_llm --out runs/bundled/llm_words --steps 0
export OMP_NUM_THREADS=1
{  # 1,200 steps of stage 0b: every question type forms by about step 900 (docs/bundled_model.md)
    tagged llm python -m bundled_model.pretrain_llm --out runs/bundled/llm --steps 500 --lines 20000 --chats 12000
    say "stage 0b"
    tagged 0b python -m bundled_model.pretrain_reading --llm runs/bundled/llm --out runs/bundled/llm_read --steps 1200 \
        --turns 4 --lookup-weight 1 --kind-copy-layer 1 --compare-weight 1 --min-answers 0.8
    say "stage data"
    tagged data stage_data
} &
reading=$!
tagged vision python -m bundled_model.pretrain_vision --config bundled_model/configs/stage1.yaml \
    --llm runs/bundled/llm_words --steps 1800 \
    --data data/bundled/train_full/caption.jsonl data/bundled/train/{vqa,ocr}.jsonl data/bundled/train2/ocr.jsonl \
    --heldout data/bundled/heldout/{caption,ocr}.jsonl
wait "$reading"  # a failed stage 0, 0b or data step fails the build here

# 3. stages 1-2 (stage 1 builds the VL model with from_llm and the pre-trained tower); stage 4: the tower
#    fitted to stage 2's LLM (LLM frozen); stage 3: the LLM learns when a clip's event happens
#    (bundled_model/video_time.py: a probe of each video token's second, one of the tokens whose share of the
#    event shape's ink changed, a head told the event's changed tokens; pictures mixed in) in three passes,
#    each a warm restart with another draw order, on the refitted tower's tokens (the event lookup forms
#    in the pass after the refit, not in passes before it); stage 5: the tower and the LLM fitted to each
#    other on pictures (both learning); stage 6: pictures on light backgrounds too
two_processes() {  # NAME SCRIPT ARGS...: two one-thread CPU processes; the launcher's stderr kept, a failure told
    local errors="runs/bundled/$1.stderr"; shift
    if ! ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no \
        --dynamo_backend no "$@" 2>"$errors"; then
        grep -m1 "^error: " "$errors" >&2 || tail -n 20 "$errors" >&2  # the trainer's own line if it gave one
        exit 1
    fi
}
stage() {  # N: the trainer on bundled_model/configs/stageN.yaml, each process with half the batch
    two_processes "stage$1" training/train.py --config "bundled_model/configs/stage$1.yaml" \
        --set progress=false --set batch_size=4
}
for n in 1 2 4; do
    say "stage $n"
    stage "$n"
done
from=runs/bundled/stage4/final
for pass in 0 1 2; do
    say "stage 3, pass $pass"
    two_processes "stage3_$pass" -m bundled_model.video_time --model "$from" --out "runs/bundled/stage3_$pass" --seed "$pass" \
        --steps 1000 --data data/bundled/{train,train2}/video.jsonl data/bundled/{train,train2}/{caption,vqa,ocr}.jsonl:0.25
    from=runs/bundled/stage3_$pass
done
say "stage 5"
stage 5
say "stage 6"
stage 6
unset OMP_NUM_THREADS

# 4. install it in the package and score it on the held-out sets
say "install"
python -m bundled_model.install runs/bundled/stage6/final
say "scores"
score() {  # SET NAME: one held-out set, one thread (the seven run side by side on the two cores)
    OMP_NUM_THREADS=1 python -m qwen_vl.eval --task "synthetic-${2%%_*}" --data "data/bundled/$1/${2%%_*}.jsonl" \
        --output "runs/bundled/eval/$2" --no-progress
}
scoring=()
for task in caption vqa ocr video; do
    score heldout "$task" & scoring+=($!)
done
score heldout_fps video_unseen_fps & scoring+=($!)
for task in caption vqa; do
    score heldout_alt "${task}_alt" & scoring+=($!)
done
for job in "${scoring[@]}"; do wait "$job"; done  # a failed score fails the build
say "done"
