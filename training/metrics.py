"""Per-step metrics: a CSV file (rewritten atomically on resume so it never holds steps past the
checkpoint), TensorBoard when installed, and a tqdm progress bar with loss, tokens/s and ETA."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from qwen_vl.fileio import atomic_write_text

COLUMNS = ("step", "loss", "lr", "grad_norm", "tokens", "label_tokens", "samples", "seconds")


class MetricsLog:
    def __init__(self, output_dir: Path, history: list[dict], tensorboard: bool, enabled: bool):
        self.enabled = enabled
        self.path = output_dir / "metrics.csv"
        self.writer = None
        if not enabled:
            return
        # start from exactly the steps the run resumes from
        buffer = io.StringIO()
        table = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
        table.writeheader()
        table.writerows(history)
        atomic_write_text(self.path, buffer.getvalue())
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                SummaryWriter = None
            if SummaryWriter is not None:
                self.writer = SummaryWriter(str(output_dir / "tensorboard"))

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", newline="", encoding="utf-8") as handle:
            csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore").writerow(record)
        if self.writer is not None:
            step = record["step"]
            for key in ("loss", "lr", "grad_norm"):
                if record.get(key) is not None:
                    self.writer.add_scalar(f"train/{key}", record[key], step)
            if record.get("seconds"):
                self.writer.add_scalar("train/tokens_per_s", record["tokens"] / record["seconds"], step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_metrics(path: Path) -> list[dict]:
    """The CSV as a list of dicts with numbers parsed (for tests and tools)."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    out = []
    for row in rows:
        out.append({k: (float(v) if v not in ("", None) else None) for k, v in row.items()})
    return out


class Progress:
    """tqdm bar over optimizer steps (main process only)."""

    def __init__(self, total: int, initial: int, enabled: bool):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True)

    def update(self, loss: float, tokens_per_s: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tokens_per_s:,.0f}", refresh=False)
            self.bar.update(1)

    def write(self, line: str) -> None:
        """A line above the bar (printed as is without one)."""
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
