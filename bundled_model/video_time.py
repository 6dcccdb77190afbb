"""Stage 3 for the bundled model: the LLM learns to read when a clip's event happens.

"When does the green star appear?" is answered with the second of the temporal token where the star
first shows, and M-RoPE puts a token's second only into attention scores. Learned from the answers
alone, the answers stay near guesses, and so they do with a time code and an event lookup
(docs/bundled_model.md). This stage adds the change probe of bundled_model/clip_events.py and points the
lookup at the tokens that changed where the event shows, on the real rendered clips of the training
sets. Three losses beside the answers' token loss, all on the decoder (the vision tower is frozen,
merger and LLM learn):
- time code (bundled_model/time_code.py): a probe on layer TIME_LAYER's output names each video token's second;
- change probe: a probe on layer CHANGE_LAYER's output says whether each video token's share of the event
  shape's ink changed since the same place one temporal token before;
- event lookup (bundled_model/lookup.py): at the position that predicts a "When does ...?" answer's number,
  head LOOKUP_HEAD of layer LOOKUP_LAYER attends to the changed tokens of the event's temporal token.
The probes are dropped when the model is written. Pictures mixed into the data (`--data
PATH:WEIGHT`) keep the captions and VQA answers from drifting while the LLM learns.

    python -m bundled_model.video_time --model runs/bundled/stage4/final --out runs/bundled/stage3_0 \\
        --data data/bundled/train/video.jsonl data/bundled/train2/video.jsonl data/bundled/train/caption.jsonl:0.25

Under `accelerate launch --num_processes N bundled_model/video_time.py ...` each step's BATCH_SIZE
samples are split over the processes (process r encodes the r-th share of the same stream), so N
one-thread processes on N cores take the steps of one process, with each process's mean losses
averaged instead of one mean over the batch.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from bundled_model.clip_events import (
    WHEN_TYPES,
    ChangeProbe,
    changed_tokens,
    event_tokens,
    scene_from_record,
    shown_frames,
)
from bundled_model.lookup import LookupLoss, number_position
from bundled_model.time_code import TimeCode, token_seconds
from qwen_vl.errors import OneLineParser, QwenVLError
from qwen_vl.training.config import DataSource
from qwen_vl.training.data import ConversationData, Sample
from qwen_vl.training.loss import answer_loss
from qwen_vl.training.packing import Batch, padded_batch

from .loop import Loop

BATCH_SIZE = 8  # samples per step, split over the processes
LR = 3e-4  # peak learning rate of merger and LLM
WARMUP = 20  # steps
LOG_EVERY = 250  # steps between the losses' lines (and one at the end)
MAX_SEQ_LEN = 1024
TIME_LAYER, CHANGE_LAYER, LOOKUP_LAYER = 0, 1, 2  # the decoder layers the probes and the lookup read
LOOKUP_HEAD = 0


@dataclass
class ClipLabels:
    """What the probes and the lookup are told about one encoded sample (nothing for a picture)."""

    probed: torch.Tensor  # bool [L]: the video tokens the probes read (all of a rendered clip's)
    changed: torch.Tensor  # bool [N]: per probed token, whether it changed since the temporal token before
    seconds: torch.Tensor  # long [N]: per probed token, its second
    lookup: tuple[int, torch.Tensor] | None  # (position predicting the answer's number, bool [L] targets)


def clip_labels(sample: Sample, record: dict, processor) -> ClipLabels:
    """The labels of a sample encoded from `record`, a line of bundled_model/synthetic.py's sets."""
    video = sample.input_ids == processor.video_token_id
    scene = scene_from_record(record)
    shown = shown_frames(scene, processor) if scene is not None else []
    if scene is None or sample.video_grid_thw is None or len(shown) != int(sample.video_grid_thw[0, 0]):
        none = torch.zeros(0, dtype=torch.long)
        return ClipLabels(torch.zeros_like(video), none.bool(), none, None)
    _, height, width = sample.video_grid_thw[0].tolist()
    merge = processor.image_settings.merge_size
    changed = changed_tokens(scene, shown, height // merge, width // merge, processor.image_settings.factor)
    lookup = None
    if record.get("question_type") in WHEN_TYPES:
        event = event_tokens(scene, shown, changed)
        if event is not None:
            targets = torch.zeros_like(video)
            targets[video.nonzero()[:, 0]] = event.flatten()
            lookup = (number_position(sample), targets)
    return ClipLabels(video, changed.flatten(), token_seconds(sample, merge), lookup)


@dataclass
class ClipBatch:
    batch: Batch
    probed: torch.Tensor  # bool [B, L]
    changed: torch.Tensor  # bool [N], row-major over `probed`
    seconds: torch.Tensor  # long [N]
    lookup_rows: list[tuple[int, int]]  # (batch row, position) per "when" question
    lookup_targets: torch.Tensor  # bool [len(lookup_rows), L]


def clip_batch(pairs: list[tuple[Sample, ClipLabels]], position_ids, pad_id: int) -> ClipBatch:
    """A right-padded batch, one sample per row, with its samples' labels laid out to match."""
    batch = padded_batch([sample for sample, _ in pairs], position_ids, pad_id)
    width = batch.input_ids.shape[1]
    probed = torch.zeros(len(pairs), width, dtype=torch.bool)
    rows, targets = [], []
    for row, (sample, labels) in enumerate(pairs):
        probed[row, : len(sample)] = labels.probed
        if labels.lookup is not None:
            position, target = labels.lookup
            rows.append((row, position))
            targets.append(torch.nn.functional.pad(target, (0, width - len(target))))
    return ClipBatch(
        batch,
        probed,
        torch.cat([labels.changed for _, labels in pairs]),
        torch.cat([labels.seconds for _, labels in pairs]),
        rows,
        torch.stack(targets) if targets else torch.zeros(0, width, dtype=torch.bool),
    )


def data_source(item: str) -> DataSource:
    """PATH or PATH:WEIGHT -> DataSource (weight 1 where none is given)."""
    path, colon, weight = item.rpartition(":")
    try:
        return DataSource(path, float(weight)) if colon else DataSource(item)
    except ValueError:  # a colon in the path itself
        return DataSource(item)


class StepLosses:
    """The answers' loss and the three auxiliary losses of one batch, with what each got right."""

    def __init__(self, model):
        layers, width = model.model.layers, model.config.text.hidden_size
        self.timecode = TimeCode(layers[TIME_LAYER], width)
        self.change = ChangeProbe(layers[CHANGE_LAYER], width)
        self.lookup = LookupLoss(layers[LOOKUP_LAYER], LOOKUP_HEAD)

    def parameters(self) -> list[torch.nn.Parameter]:
        return [*self.timecode.parameters(), *self.change.parameters()]

    def __call__(self, model, clips: ClipBatch) -> tuple[torch.Tensor, dict[str, float]]:
        batch = clips.batch
        loss = answer_loss(model, batch.model_inputs(), batch.labels, "mean")
        seen = {"answers": loss.item()}
        if clips.probed.any():
            coded, seen["time code"] = self.timecode.loss(clips.probed, clips.seconds)
            changed, seen["changes found"] = self.change.loss(clips.probed, clips.changed)
            loss = loss + coded + changed
        if clips.lookup_rows:
            looked, seen["event lookup"] = self.lookup.loss(clips.lookup_rows, clips.lookup_targets)
            loss = loss + looked
        return loss, seen


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = OneLineParser(prog="python -m bundled_model.video_time", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="the VL model directory to start from (e.g. stage 4's final)")
    p.add_argument("--out", required=True, help="where to write the model directory (replaced atomically)")
    p.add_argument(
        "--data",
        nargs="+",
        required=True,
        metavar="PATH[:WEIGHT]",
        help="JSON Lines sets of bundled_model/synthetic.py (clips get the probes' labels from their scene; pictures "
        "only the answers' loss); WEIGHT: draws per line per epoch, as in the stage configs",
    )
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0, help="the data's draw order (each pass of the build its own)")
    args = p.parse_args(argv)
    if args.steps < 1:
        p.error("--steps is >= 1")
    return args


def labelled(data: ConversationData, processor, ref) -> tuple[Sample, ClipLabels] | None:
    """The sample of `ref` with its labels; None where it does not encode (counted as skipped)."""
    sample = data.encode(ref)
    if sample is None:
        return None
    return sample, clip_labels(sample, json.loads(data.files[ref[0]].line(ref[1])), processor)


def next_sample(data: ConversationData, processor, seed: int, position: int) -> tuple[Sample, ClipLabels]:
    """The first sample of the stream from `position` on that encodes."""
    while True:
        for ref in data.refs_at(seed, position, 64):
            if (pair := labelled(data, processor, ref)) is not None:
                return pair
        position += 64


def average_probe_grads(params: list[torch.nn.Parameter], world: int) -> None:
    """The probes live outside the DDP-wrapped model: average their gradients over processes by hand."""
    if world == 1:
        return
    for p in params:
        if p.grad is None:  # no clip in this process's share
            p.grad = torch.zeros_like(p)
        torch.distributed.all_reduce(p.grad)
        p.grad /= world


def main(argv: list[str] | None = None) -> int:
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    from qwen_vl.modeling.model import QwenVLForConditionalGeneration
    from qwen_vl.processing import QwenVLProcessor
    from qwen_vl.training import checkpoint as ckpt

    args = parse_args(argv)
    if not Path(args.model, "config.json").is_file():
        print(f"error: --model {args.model}: no model there (config.json not found)", file=sys.stderr)
        return 2
    try:
        model = QwenVLForConditionalGeneration.from_pretrained(args.model, dtype=torch.float32)
        processor = QwenVLProcessor.from_pretrained(args.model)
        data = ConversationData([data_source(item) for item in args.data], processor, MAX_SEQ_LEN)
    except (OSError, ValueError, QwenVLError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    layers = len(model.model.layers)
    if layers <= max(TIME_LAYER, CHANGE_LAYER, LOOKUP_LAYER):
        print(f"error: --model {args.model}: the probes read layers 0-{LOOKUP_LAYER}, it has {layers}", file=sys.stderr)
        return 2

    # every share has a clip or a picture, so merger and LLM always take part: no search for unused parameters
    accelerator = Accelerator(kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=False)])
    rank, world = accelerator.process_index, accelerator.num_processes
    if BATCH_SIZE % world:
        print(f"error: the batch of {BATCH_SIZE} does not split over {world} processes", file=sys.stderr)
        return 2
    share = BATCH_SIZE // world
    torch.manual_seed(args.seed)
    model.visual.requires_grad_(False)
    model.visual.merger.requires_grad_(True)
    losses = StepLosses(model)
    params = [p for p in model.parameters() if p.requires_grad] + losses.parameters()
    loop = Loop(params, args.steps, LR, WARMUP)
    wrapped, loop.optimizer = accelerator.prepare(model, loop.optimizer)
    pad_id = processor.tokenizer.pad_token_id or 0
    model.train()
    seen: dict[str, list[float]] = {}  # this process's losses: the log line is process 0's
    started = time.time()

    def step_loss(step: int) -> torch.Tensor:
        refs = data.refs_at(args.seed, step * BATCH_SIZE + rank * share, share)
        pairs = [pair for ref in refs if (pair := labelled(data, processor, ref)) is not None]
        if not pairs:  # every sample of the share was skipped: every process must still take the step
            pairs = [next_sample(data, processor, args.seed, step * BATCH_SIZE)]
        loss, step_seen = losses(wrapped, clip_batch(pairs, model.position_ids, pad_id))
        for name, value in step_seen.items():
            seen.setdefault(name, []).append(value)
        return loss

    def backward(loss: torch.Tensor) -> None:
        accelerator.backward(loss)
        average_probe_grads(losses.parameters(), world)

    def report(step: int, loss: torch.Tensor) -> None:
        if (step + 1) % LOG_EVERY == 0 or step == args.steps - 1:
            line = ", ".join(f"{name} {sum(v) / len(v):.3f}" for name, v in seen.items())
            if accelerator.is_main_process:
                print(f"step {step + 1}/{args.steps}: {line} (means since the last line)", flush=True)
            seen.clear()

    loop.run(step_loss, report, backward, accelerator.clip_grad_norm_)
    skipped = ", ".join(f"{n} {reason}" for reason, n in sorted(data.skipped.items()))
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return 0
    out = Path(args.out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = ckpt.staging_dir(out.parent, out.name)
        ckpt.save_model_dir(model.eval(), processor, staging)
        ckpt.publish(staging, out)
    except OSError as err:
        print(f"error: cannot write {args.out}: {err}", file=sys.stderr)
        return 1
    print(
        f"wrote {out}: {args.steps} steps, {time.time() - started:.0f} s; skipped samples (process 0's share): {skipped or 'none'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
