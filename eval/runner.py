"""`qwen-vl eval` / `python -m qwen_vl.eval`: run a benchmark on a model and score it.

    qwen-vl eval --task textvqa --data DIR --model DIR [--output DIR] [--limit N]
                 [--batch-size 8] [--max-new-tokens N] [--resume] [--circular]
    qwen-vl eval --task textvqa --data DIR --predictions FILE    (score {"id", "prediction"} lines, no model)
    accelerate launch --multi_gpu --num_processes 2 -m qwen_vl.eval --task ...   (data parallel; also on CPUs)
    torchrun --nproc_per_node 2 -m qwen_vl.eval --task ...                         (the same without accelerate)

Each process answers a strided shard of the samples (sample i goes to process i % world), greedy,
batched, and appends its predictions to a JSON Lines file batch by batch (fsync). The main process
then merges the files into predictions.jsonl and writes metrics.json and metrics.md (atomically).
`--resume` skips every id already answered in the predictions files and retries failed ones. A
sample whose media cannot be read is recorded as failed with its reason and counted as wrong.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from qwen_vl.errors import OneLineParser, QwenVLError
from qwen_vl.eval import predictions as pred
from qwen_vl.eval.api_backend import ApiBackend
from qwen_vl.eval.datasets import Sample
from qwen_vl.eval.datasets.mmbench import main_questions
from qwen_vl.eval.report import sample_values, score_run, write_report
from qwen_vl.eval.scoring import METRICS
from qwen_vl.eval.tasks import TASKS, Task, conversation, grounding_frame, load_samples
from qwen_vl.extras import needs_extras


class UsageError(QwenVLError):
    """Arguments that do not fit together or do not fit the output folder."""


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="qwen-vl eval", description="Run a benchmark on a local copy of its data and score it.")
    parser.add_argument("--task", required=True, choices=sorted(TASKS), help="benchmark to run")
    parser.add_argument(
        "--data", required=True, type=Path, help="the local copy: a folder or file in the task's layout"
    )
    parser.add_argument("--model", default=None, help="model directory or hub name (default: the bundled model)")
    parser.add_argument("--output", type=Path, default=None, help="results folder (default: eval-results/<task>)")
    parser.add_argument("--limit", type=_positive, default=None, help="only the first N samples")
    parser.add_argument("--batch-size", type=_positive, default=8, help="conversations per generate call")
    parser.add_argument("--max-new-tokens", type=_positive, default=None, help="default: the task's")
    parser.add_argument(
        "--resume", action="store_true", help="continue a run: skip ids already answered, retry failed ones"
    )
    parser.add_argument(
        "--predictions",
        type=Path,
        default=None,
        help='score a JSON Lines file of {"id", "prediction"} against the data instead of running a model',
    )
    parser.add_argument(
        "--circular",
        action="store_true",
        help="multiple choice: MMBench's circular protocol over the rotated copies (default: main questions only)",
    )
    parser.add_argument(
        "--metric", default=None, help="comma-separated metrics (default: the task's); " + ", ".join(METRICS)
    )
    parser.add_argument("--prompt", default=None, help="instruction after the question (default: the task's)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda if available)")
    parser.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    parser.add_argument(
        "--quantize", default=None, choices=["int8", "int4"], help="weight-only quantization as the model loads (CPU)"
    )
    parser.add_argument(
        "--api-base",
        default=None,
        metavar="URL",
        help="answer through an OpenAI-compatible server (qwen-vl serve, vLLM), e.g. http://127.0.0.1:8000/v1",
    )
    parser.add_argument("--api-model", default=None, metavar="NAME", help="the served model's name (with --api-base)")
    parser.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY"), help=argparse.SUPPRESS)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    """Exit code: 0 done, 2 bad input (one line on stderr)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    try:
        with needs_extras("this evaluation"):
            return run(args)
    except QwenVLError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


# ---- processes -------------------------------------------------------------------------------
class Processes:
    """This process's place in a data-parallel run (accelerate launch), or a lone process."""

    def __init__(self):
        self._state = None
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            import torch
            from accelerate import PartialState

            # without cpu=True, accelerate leaves CPU-only processes un-grouped (one "process" each)
            self._state = PartialState(cpu=not torch.cuda.is_available())
        self.rank = self._state.process_index if self._state else 0
        self.world = self._state.num_processes if self._state else 1
        self.is_main = self.rank == 0

    def barrier(self) -> None:
        if self._state is not None:
            self._state.wait_for_everyone()

    def device(self, requested: str | None) -> str | None:
        if requested or self._state is None:
            return requested
        return str(self._state.device)


# ---- the run ---------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    task = TASKS[args.task]
    if args.circular and not task.choice:
        raise UsageError(f"--circular needs a multiple-choice task, not {task.name}")
    if args.predictions is not None and args.resume:
        raise UsageError("--predictions scores a finished file; it does not go with --resume")
    if (args.api_base is None) != (args.api_model is None):
        raise UsageError("--api-base and --api-model go together: the server's URL and its model's name")
    if args.api_base is not None and (args.model or args.quantize or args.dtype or args.device):
        raise UsageError("--api-base answers through a server: --model, --dtype, --device and --quantize are its own")
    metric_names = _metric_names(args.metric, task, args.circular)
    prompt = task.prompt if args.prompt is None else args.prompt
    max_new_tokens = args.max_new_tokens or task.max_new_tokens
    out_dir = args.output or Path("eval-results") / task.name
    procs = Processes()

    samples = load_samples(task, args.data)
    if task.choice and not args.circular:
        samples = main_questions(samples)
    if args.limit is not None:
        samples = samples[: args.limit]
    existing = (out_dir / pred.PREDICTIONS).exists() or any(out_dir.glob(pred.PART_GLOB))
    if existing and not args.resume:
        advice = (
            "pick another --output" if args.predictions else "pass --resume to continue it or pick another --output"
        )
        raise UsageError(f"{out_dir}: holds predictions of an earlier run; {advice}")
    if args.predictions is not None:
        return score_file(args, task, metric_names, samples, out_dir, procs)
    out_dir.mkdir(parents=True, exist_ok=True)
    done = {str(r["id"]) for r in pred.all_records(out_dir) if not pred.failed(r)}
    procs.barrier()  # every process has read the old state before any writes

    shard = [s for i, s in enumerate(samples) if i % procs.world == procs.rank and s.id not in done]
    if shard:
        backend = ApiBackend(args.api_base, args.api_model, args.api_key, args.batch_size) if args.api_base else None
        backend = backend or LocalBackend.load(args, procs)
        log_path = out_dir / pred.PREDICTIONS if procs.world == 1 else pred.part_path(out_dir, procs.rank)
        with pred.PredictionLog(log_path) as log:
            show = procs.is_main and not args.no_progress
            answer_all(shard, backend, max_new_tokens, prompt, metric_names, log, args.batch_size, show)
    procs.barrier()

    if not procs.is_main:
        return 0
    records = pred.merge(out_dir, [s.id for s in samples])
    result = score_run(task, metric_names, samples, records)
    result.update(
        model=f"{args.api_model} at {args.api_base}" if args.api_base else str(args.model) if args.model else "bundled",
        data=str(args.data),
        prompt=prompt,
        max_new_tokens=max_new_tokens,
        limit=args.limit,
        processes=procs.world,
    )
    return _finish(out_dir, result)


def score_file(args, task: Task, metric_names, samples: list[Sample], out_dir: Path, procs) -> int:
    """Score a predictions file without a model: the same outputs as a model run (predictions.jsonl
    with per-sample scores, metrics.json, metrics.md). Samples the file lacks are reported missing."""
    if not procs.is_main:
        return 0
    given = pred.read_prediction_file(args.predictions)
    known = {s.id for s in samples}
    if given and not known & set(given):
        raise UsageError(f"{args.predictions}: none of its ids is a sample of this {task.name} data")
    records = []
    for sample in samples:
        line = given.get(sample.id)
        if line is not None:
            answer = None if line.get("error") is not None else line["prediction"]
            records.append(_record(sample, answer, line.get("error"), metric_names, line.get("frame")))
    out_dir.mkdir(parents=True, exist_ok=True)
    with pred.PredictionLog(out_dir / pred.PREDICTIONS) as log:
        log.append(records)
    records = pred.merge(out_dir, [s.id for s in samples])
    result = score_run(task, metric_names, samples, records)
    result.update(
        predictions=str(args.predictions),
        data=str(args.data),
        limit=args.limit,
        unmatched_predictions=len(set(given) - known),
    )
    return _finish(out_dir, result)


def _finish(out_dir: Path, result: dict) -> int:
    write_report(out_dir, result)
    from qwen_vl.eval.report import markdown

    print(markdown(result), end="")
    print(f"results in {out_dir}/ (predictions.jsonl, metrics.json, metrics.md)", file=sys.stderr)
    return 0


def _metric_names(option: str | None, task: Task, circular: bool = False) -> tuple[str, ...]:
    if option is None:
        return ("circular_accuracy", *task.metrics) if circular else task.metrics
    names = tuple(n.strip() for n in option.split(",") if n.strip())
    unknown = [n for n in names if n not in METRICS]
    if unknown or not names:
        raise UsageError(f"--metric {option!r}: unknown metric; choose from {', '.join(METRICS)}")
    for name in ("choice_accuracy", "circular_accuracy"):
        if name in names and not task.choice:
            raise UsageError(f"--metric {name} needs a multiple-choice task, not {task.name}")
    return names


class LocalBackend:
    """Greedy answers from a model loaded in this process."""

    def __init__(self, model, processor):
        self.model, self.processor = model, processor
        self.model_type, self.image_settings = model.config.model_type, processor.image_settings

    @classmethod
    def load(cls, args: argparse.Namespace, procs: Processes) -> LocalBackend:
        from qwen_vl.loading import load_model

        device = procs.device(args.device)
        return cls(*load_model(args.model, device=device, dtype=args.dtype, quantize=args.quantize))

    def generate(self, conversations: list[list[dict]], max_new_tokens: int) -> list[str | QwenVLError]:
        """One answer per conversation; a batch that fails on bad input is retried one conversation at a
        time, so one unreadable image fails only its own sample."""
        from qwen_vl.generation import SamplingConfig, generate_text

        sampling = SamplingConfig(max_new_tokens=max_new_tokens, temperature=0.0)
        try:
            return generate_text(self.model, self.processor, conversations, sampling)
        except QwenVLError as err:
            if len(conversations) == 1:
                return [err]
        out: list[str | QwenVLError] = []
        for one in conversations:
            try:
                out.append(generate_text(self.model, self.processor, [one], sampling)[0])
            except QwenVLError as err:
                out.append(err)
        return out


def answer_all(
    shard: list[Sample], backend, max_new_tokens: int, prompt: str, metric_names, log, batch_size: int, show: bool
) -> None:
    """Answer the shard batch by batch, appending each batch's records to the log."""
    from tqdm import tqdm

    headline = METRICS[metric_names[0]]
    seen_values: list = []
    with tqdm(total=len(shard), desc="eval", unit="sample", disable=not show, file=sys.stderr) as bar:
        for start in range(0, len(shard), batch_size):
            batch = shard[start : start + batch_size]
            records = [
                _record(sample, answer, error, metric_names, _frame(sample, error, backend))
                for sample, (answer, error) in zip(
                    batch, answer_batch(batch, backend, max_new_tokens, prompt), strict=True
                )
            ]
            log.append(records)
            seen_values += [r["scores"][headline.name] for r in records]
            bar.update(len(batch))
            bar.set_postfix({headline.name: f"{headline.aggregate(seen_values):.2f}"})


def answer_batch(batch: list[Sample], backend, max_new_tokens: int, prompt: str) -> list[tuple[str | None, str | None]]:
    """(answer, error) per sample; a sample whose input fails (its media, its length) gets its error."""
    conversations = []
    for sample in batch:
        try:
            conversations.append(conversation(sample, prompt))
        except QwenVLError as err:
            conversations.append(err)
    asked = [c for c in conversations if not isinstance(c, QwenVLError)]
    answers = iter(backend.generate(asked, max_new_tokens) if asked else [])
    out = []
    for item in conversations:
        result = item if isinstance(item, QwenVLError) else next(answers)
        out.append((None, str(result)) if isinstance(result, QwenVLError) else (result.strip(), None))
    return out


def _frame(sample: Sample, error: str | None, backend) -> dict | None:
    """A grounding sample's coordinate frame (None for other samples and failed ones)."""
    if not {"box", "boxes"} & sample.meta.keys() or error is not None:
        return None
    try:
        return grounding_frame(sample, backend.model_type, backend.image_settings)
    except (QwenVLError, ValueError):
        return None


def _record(sample: Sample, answer: str | None, error: str | None, metric_names, frame: dict | None = None) -> dict:
    record = {
        "id": sample.id,
        "question": sample.question,
        "answers": sample.answers,
        "prediction": answer,
        "error": error,
    }
    if frame is not None:
        record["frame"] = frame
    record["scores"] = sample_values(metric_names, sample, record)
    return record
