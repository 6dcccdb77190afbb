"""Train a Qwen2.5-VL model in one of three stages from a YAML config.

    python -m qwen_vl.training.train --config training/configs/stage1.yaml --set max_steps=10
    accelerate launch training/train.py --config training/configs/stage3.yaml [--resume]

One optimizer step takes `grad_accum` micro-batches; each micro-batch takes the next
`batch_size * num_processes` samples of the deterministic data stream, and process r encodes
samples [r * batch_size, (r + 1) * batch_size) of them. The loss of a step is the sum of token
losses over all its label tokens on all processes divided by their global count, so the result
does not depend on how the samples are split over rows, micro-batches or processes."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from qwen_vl.errors import CheckpointError, OneLineParser, QwenVLError
from qwen_vl.extras import needs_extras
from qwen_vl.training import checkpoint as ckpt
from qwen_vl.training.config import ConfigError, TrainConfig, load_config
from qwen_vl.training.data import IGNORE, SKIP_REASONS, ConversationData, Sample
from qwen_vl.training.loss import answer_loss
from qwen_vl.training.metrics import MetricsLog, Progress
from qwen_vl.training.packing import Batch, packed_batch, padded_batch
from qwen_vl.training.params import apply_lora, param_groups, set_trainable
from qwen_vl.training.schedule import cosine_schedule


def build_model(cfg: TrainConfig):
    """(model in fp32, processor) from `init`: a VL model directory or an LLM + vision config."""
    from qwen_vl.modeling.model import QwenVLForConditionalGeneration
    from qwen_vl.processing import QwenVLProcessor

    source = cfg.init.get("model") or cfg.init.get("llm")
    if not Path(source).is_dir():
        raise ConfigError(f"init: model directory not found: {source}")
    if "model" in cfg.init:
        model = QwenVLForConditionalGeneration.from_pretrained(source, dtype=torch.float32)
    else:
        model = QwenVLForConditionalGeneration.from_llm(
            source, vision_config=cfg.init.get("vision"), vision_state=pretrained_vision(cfg), dtype=torch.float32
        )
    processor = QwenVLProcessor.from_pretrained(source, **cfg.image)
    return model, processor


def pretrained_vision(cfg: TrainConfig) -> dict | None:
    """The vision tower written by bundled_model/pretrain_vision.py, where the config names one."""
    path = cfg.init.get("vision_weights")
    if path is None:
        return None
    if not Path(path).is_file():
        raise ConfigError(f"init.vision_weights: file not found: {path} (run python -m bundled_model.pretrain_vision)")
    from safetensors.torch import load_file

    return load_file(path)


def fsdp_on_cpu_processes(acc) -> None:
    """accelerate runs an FSDP launch on CPU processes (gloo) as plain DDP (MULTI_CPU) without a
    word; torch's FSDP2 itself runs there, so hand accelerate the FSDP plugin that it left out."""
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() != "true":
        return
    if acc.distributed_type != DistributedType.MULTI_CPU:
        return
    from accelerate.state import PartialState

    acc.state.fsdp_plugin = FullyShardedDataParallelPlugin()  # from the FSDP_* variables of `accelerate launch`
    # every new AcceleratorState copies the process state's type back in: set it on both
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    acc.state.distributed_type = DistributedType.FSDP


def has_vision(sample: Sample) -> bool:
    return sample.pixel_values is not None or sample.pixel_values_videos is not None


def without_labels(sample: Sample) -> Sample:
    return Sample(**{**sample.__dict__, "labels": torch.full_like(sample.labels, IGNORE)})


def refuse_deepspeed(acc, cfg: TrainConfig) -> None:
    """DeepSpeed launches that would not train as configured: accelerate runs them on CPU processes
    as plain DDP without a word, and its DeepSpeed engine steps the optimizer after every backward
    pass unless told that a micro-batch is not the last one, which this loop does not do."""
    from accelerate.utils import DistributedType

    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() != "true":
        return
    if acc.distributed_type != DistributedType.DEEPSPEED:
        raise ConfigError(
            f"DeepSpeed: accelerate runs these {acc.device.type} processes as {acc.distributed_type.value} "
            "without DeepSpeed (it needs GPUs); use the FSDP config (training/configs/accelerate/fsdp.yaml)"
        )
    if cfg.grad_accum > 1:
        raise ConfigError("DeepSpeed: grad_accum must be 1 (the engine would step after every micro-batch)")


class Trainer:
    def __init__(self, cfg: TrainConfig, resume: bool = False):
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs, set_seed

        self.cfg = cfg
        self.output_dir = Path(cfg.output_dir)
        try:
            # some batches carry no image (text-only samples), so the vision tower may be unused
            self.accelerator = Accelerator(
                mixed_precision=cfg.mixed_precision,
                kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
            )
        except ValueError as err:
            raise ConfigError(f"mixed_precision {cfg.mixed_precision!r}: {str(err).splitlines()[0]}") from None
        acc = self.accelerator
        fsdp_on_cpu_processes(acc)
        refuse_deepspeed(acc, cfg)
        self.rank, self.world = acc.process_index, acc.num_processes
        set_seed(cfg.seed)

        resume_from = ckpt.latest_checkpoint(self.output_dir) if resume else None
        if not resume and ckpt.list_checkpoints(self.output_dir):
            raise ConfigError(
                f"output_dir {self.output_dir}: already holds checkpoints; pass --resume to continue or choose another output_dir"
            )
        if resume and resume_from is None:
            acc.print(f"resume: no complete checkpoint in {self.output_dir}; starting at step 0")

        model, self.processor = build_model(cfg)
        if cfg.lora is not None:
            apply_lora(model, cfg)
        if resume_from is not None:
            self._load_weights(model, resume_from)
        self.trainable_counts = set_trainable(model, cfg)
        if cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        model.train()
        optimizer = torch.optim.AdamW(param_groups(model, cfg), betas=cfg.betas)
        self.scheduler = cosine_schedule(optimizer, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio)
        self.model, self.optimizer = acc.prepare(model, optimizer)
        self.unwrapped = acc.unwrap_model(self.model)

        self.data = ConversationData(cfg.data, self.processor, cfg.max_seq_len, self.unwrapped.config.model_type)
        tok = self.processor.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        self.step, self.position, self.history = 0, 0, []
        self.spare: Sample | None = None  # stands in for a micro-batch whose samples were all skipped
        self.vision_spare: Sample | None | bool = None  # False: the data holds no image or video
        if resume_from is not None:
            state = ckpt.read_state(resume_from)
            self._load_optimizer(ckpt.read_optimizer(resume_from))
            ckpt.load_scheduler(resume_from, self.scheduler)
            ckpt.load_rng(resume_from, self.rank)
            self.step, self.position, self.history = state["step"], state["position"], state["history"]
            if self.rank == 0:
                self.data.skipped.update(state.get("skipped", {}))
            acc.print(f"resumed from {resume_from} at step {self.step}")
        if acc.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            ckpt.clean_staging(self.output_dir)
        acc.wait_for_everyone()
        self.metrics = MetricsLog(self.output_dir, self.history, cfg.tensorboard, acc.is_main_process)

    def _load_weights(self, model, checkpoint: Path) -> None:
        if self.cfg.lora is not None:
            missing = model.load_state_dict(ckpt.load_adapter(checkpoint), strict=False)
            if missing.unexpected_keys:
                raise QwenVLError(f"{checkpoint}: adapter tensors do not fit the model ({missing.unexpected_keys[0]})")
            return
        from qwen_vl.weights import load_state_dict

        state = load_state_dict(checkpoint, dtype=torch.float32)
        if model.config.tie_word_embeddings:
            state.pop("lm_head.weight", None)
        model.load_state_dict(state, strict=not model.config.tie_word_embeddings)

    # ---- sharded (FSDP) or whole state -----------------------------------------------------
    @property
    def sharded(self) -> bool:
        from accelerate.utils import DistributedType

        return self.accelerator.distributed_type == DistributedType.FSDP

    def _mode(self) -> str:
        """How several processes share the work: ' (DDP)', ' (FSDP2)', ...; '' for one process."""
        if self.world == 1:
            return ""
        if self.sharded:
            return f" (FSDP{self.accelerator.state.fsdp_plugin.fsdp_version})"
        return " (DDP)"

    def _full_states(self) -> tuple[dict | None, dict]:
        """(model state or None = read the model itself, optimizer state), whole on the main
        process. Under FSDP every process must take part: the shards are gathered."""
        if not self.sharded:
            return None, self.optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        model_state = self.accelerator.get_state_dict(self.model)
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return model_state, get_optimizer_state_dict(self.model, self.optimizer, options=options)

    def _load_optimizer(self, state: dict) -> None:
        """A plain optimizer state (DDP, one process) or one keyed by parameter names (written
        under FSDP), which also loads without FSDP."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        if isinstance(state["param_groups"][0]["params"][0], str):
            options = StateDictOptions(full_state_dict=True)  # each process keeps its own shard of it
            set_optimizer_state_dict(self.model, self.optimizer, state, options=options)
        elif self.sharded:
            raise CheckpointError("optimizer state written without FSDP: resume this run without FSDP")
        else:
            self.optimizer.load_state_dict(state)

    # ---- data ------------------------------------------------------------------------------
    def _micro_batch(self) -> Batch:
        """This process's share of the next `batch_size * world` samples of the stream."""
        size = self.cfg.batch_size
        refs = self.data.refs_at(self.cfg.seed, self.position, size * self.world)
        self.position += size * self.world
        samples = [s for s in map(self.data.encode, refs[self.rank * size : (self.rank + 1) * size]) if s is not None]
        if samples and self.spare is None:
            self.spare = samples[0]
        if self.vision_spare is None:
            self.vision_spare = next((s for s in samples if has_vision(s)), None)
        if not samples:  # nothing usable: run a sample with no labels so every process joins the step
            samples = [self._silent_spare()]
        if self.sharded and not any(map(has_vision, samples)):
            # FSDP gathers and reduces the vision tower's shards with collectives that every process
            # must join: run an unlabelled image sample where this process has no image or video
            samples += self._silent_vision_spare()
        if self.cfg.packing:
            return packed_batch(samples, self.cfg.max_seq_len, self.unwrapped.position_ids, self.pad_id)
        return padded_batch(samples, self.unwrapped.position_ids, self.pad_id)

    def _first_usable(self, fits) -> Sample | None:
        """The first sample of the stream that encodes and `fits` (not counted as skips again)."""
        counted = self.data.skipped.copy()
        try:
            for index in range(self.data.epoch_length()):
                found = self.data.encode(self.data.refs_at(self.cfg.seed, index, 1)[0])
                if found is not None and fits(found):
                    return found
            return None
        finally:
            self.data.skipped = counted

    def _silent_spare(self) -> Sample:
        if self.spare is None:
            self.spare = self._first_usable(lambda sample: True)
            if self.spare is None:
                raise QwenVLError(
                    f"data: none of the {self.data.epoch_length()} samples is usable ({self._skip_text()})"
                )
        return without_labels(self.spare)

    def _silent_vision_spare(self) -> list[Sample]:
        """[an image or video sample with no labels], or [] where the data has none (then no
        process ever runs the vision tower)."""
        if self.vision_spare is None:
            self.vision_spare = self._first_usable(has_vision) or False
        return [without_labels(self.vision_spare)] if self.vision_spare else []

    # ---- one optimizer step ----------------------------------------------------------------
    def train_step(self) -> dict:
        acc, cfg = self.accelerator, self.cfg
        started = time.perf_counter()
        batches = [self._micro_batch() for _ in range(cfg.grad_accum)]
        counts = torch.tensor(
            [
                sum(b.label_tokens for b in batches),
                sum(b.tokens for b in batches),
                sum(b.samples for b in batches),
                sum(b.input_ids.numel() for b in batches),  # positions computed, padding included
                sum(int(b.image_grid_thw.prod(-1).sum()) for b in batches if b.image_grid_thw is not None),
            ],
            dtype=torch.float64,
            device=acc.device,
        )
        label_tokens, tokens, samples, computed, patches = acc.reduce(counts, "sum").tolist()
        # DDP averages gradients over processes: scale by world so the result is sum / global count
        scale = self.world / max(label_tokens, 1.0)
        loss_sum = torch.zeros((), dtype=torch.float64, device=acc.device)
        for index, batch in enumerate(batches):
            batch = batch.to(acc.device)
            sync = index == len(batches) - 1
            with nullcontext() if sync else acc.no_sync(self.model), acc.autocast():
                step_sum = answer_loss(self.model, batch.model_inputs(), batch.labels)
            acc.backward(step_sum * scale)
            loss_sum += step_sum.detach().double()
        grad_norm = None
        if cfg.max_grad_norm is not None:
            params = [p for p in self.model.parameters() if p.requires_grad]
            grad_norm = float(acc.clip_grad_norm_(params, cfg.max_grad_norm))
        lr = self.scheduler.get_last_lr()
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        total = float(acc.reduce(loss_sum, "sum"))
        return {
            "step": self.step,
            "loss": total / max(label_tokens, 1.0),
            "lr": max(lr),
            "grad_norm": grad_norm,
            "tokens": int(tokens),
            "label_tokens": int(label_tokens),
            "samples": int(samples),
            "computed": int(computed),
            "image_patches": int(patches),
            "seconds": time.perf_counter() - started,
        }

    # ---- checkpoints -----------------------------------------------------------------------
    def global_skipped(self) -> dict[str, int]:
        counts = torch.tensor(
            [self.data.skipped[r] for r in SKIP_REASONS], dtype=torch.float64, device=self.accelerator.device
        )
        total = self.accelerator.reduce(counts, "sum").tolist()
        return {reason: int(n) for reason, n in zip(SKIP_REASONS, total, strict=True) if n}

    def _skip_text(self, skipped: dict[str, int] | None = None) -> str:
        skipped = self.data.skipped if skipped is None else skipped
        return ", ".join(f"{n} {r}" for r, n in sorted(skipped.items()) if n) or "none"

    def save_checkpoint(self) -> Path:
        acc = self.accelerator
        skipped = self.global_skipped()
        name = f"checkpoint-{self.step}"
        staging = ckpt.staging_dir(self.output_dir, name)
        model_state, optimizer_state = self._full_states()
        if acc.is_main_process:
            import shutil

            shutil.rmtree(staging, ignore_errors=True)
            lora = self.cfg.lora is not None
            ckpt.write_main_files(
                staging, self.unwrapped, self.processor, optimizer_state, self.scheduler, lora, model_state
            )
        acc.wait_for_everyone()
        ckpt.write_rng(staging, self.rank)
        acc.wait_for_everyone()
        if acc.is_main_process:
            state = {
                "step": self.step,
                "position": self.position,
                "seed": self.cfg.seed,
                "world": self.world,
                "history": self.history,
                "skipped": skipped,
            }
            ckpt.write_state(staging, state)
            ckpt.publish(staging, self.output_dir / name)
            ckpt.prune(self.output_dir, self.cfg.keep_last)
        acc.wait_for_everyone()
        return self.output_dir / name

    def save_final(self) -> Path:
        final = self.output_dir / "final"
        model_state = self.accelerator.get_state_dict(self.model) if self.sharded else None
        if self.accelerator.is_main_process:
            staging = ckpt.staging_dir(self.output_dir, "final")
            import shutil

            shutil.rmtree(staging, ignore_errors=True)
            ckpt.save_model_dir(self.unwrapped, self.processor, staging, model_state)
            ckpt.publish(staging, final)
        self.accelerator.wait_for_everyone()
        return final

    # ---- the run ---------------------------------------------------------------------------
    def fit(self) -> dict:
        acc, cfg = self.accelerator, self.cfg
        counts = ", ".join(f"{k} {v:,}" for k, v in self.trainable_counts.items())
        acc.print(f"stage {cfg.stage}: trainable parameters: {counts}; {self.world} process(es){self._mode()}")
        progress = Progress(cfg.max_steps, self.step, cfg.progress and acc.is_main_process)
        started, run_tokens = time.perf_counter(), 0
        try:
            while self.step < cfg.max_steps:
                record = self.train_step()
                self.history.append(record)
                run_tokens += record["tokens"]
                if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                    self.metrics.log(record)
                progress.update(record["loss"], record["tokens"] / max(record["seconds"], 1e-9))
                if cfg.save_every and self.step % cfg.save_every == 0:
                    self.save_checkpoint()
        finally:
            progress.close()
            self.metrics.close()
        final = self.save_final()
        elapsed = time.perf_counter() - started
        skipped = self.global_skipped()
        summary = {
            "steps": self.step,
            "final_loss": self.history[-1]["loss"] if self.history else None,
            "tokens": sum(r["tokens"] for r in self.history),
            "label_tokens": sum(r["label_tokens"] for r in self.history),
            "samples": sum(r["samples"] for r in self.history),
            "seconds_this_run": round(elapsed, 3),
            "tokens_per_s_this_run": round(run_tokens / elapsed, 1) if elapsed else None,
            "skipped": skipped,
            "final": str(final),
        }
        if acc.is_main_process:
            from qwen_vl.fileio import atomic_write_text

            atomic_write_text(self.output_dir / "summary.json", json.dumps(summary, indent=1) + "\n")
            print_summary(summary)
        return summary


def print_summary(summary: dict) -> None:
    loss = summary["final_loss"]
    print(
        f"done: {summary['steps']} steps, {summary['tokens']:,} tokens ({summary['label_tokens']:,} trained), "
        f"{summary['samples']:,} samples, {summary['seconds_this_run']:.1f} s this run, "
        f"final loss {loss:.4f}"
        if loss is not None
        else "done: no steps"
    )
    if summary["skipped"]:
        for reason, n in sorted(summary["skipped"].items()):
            print(f"skipped {n} sample(s): {reason} ({SKIP_REASONS[reason]})")
    else:
        print("skipped samples: none")
    print(f"model: {summary['final']}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog="qwen-vl train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="YAML training config (see training/configs/)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set max_steps=10 --set lr.llm=1e-5 (repeatable)",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue from the last complete checkpoint in output_dir"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        with needs_extras("training"):
            cfg = load_config(args.config, args.overrides)
            trainer = Trainer(cfg, resume=args.resume)
            try:
                trainer.fit()
            finally:
                # Tear the process group down now: left to interpreter exit, a gloo rank can abort
                # ("terminate called without an active exception") and fail a finished run.
                trainer.accelerator.end_training()
    except QwenVLError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    code = main()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # A finished rank leaves without the interpreter's teardown: there gloo's and FSDP's C++
        # threads can be destroyed while joinable, which aborts the process ("terminate called without
        # an active exception") and fails a run whose checkpoints and logs are already written.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
