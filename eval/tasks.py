"""The benchmark tasks: where their data comes from, their standard prompt, their metrics."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

from qwen_vl.eval import datasets as ds
from qwen_vl.eval.datasets import DataError, Sample

SHORT_ANSWER = "Answer the question using a single word or phrase."
CHOICE_LETTER = "Answer with the option's letter from the given choices directly."


@dataclass(frozen=True)
class Task:
    name: str
    load: Callable[[Path], list[Sample]]  # the published layout
    metrics: tuple[str, ...]  # the first is the headline number
    prompt: str = ""  # appended on its own line after the question
    max_new_tokens: int = 32
    parquet: bool = True  # a folder of Hugging Face mirror Parquet files is also accepted
    choice: bool = False  # multiple choice (options A-D)


TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        Task("vqav2", ds.load_vqav2, ("vqa_accuracy",), SHORT_ANSWER, 16),
        Task("textvqa", ds.load_textvqa, ("textvqa_accuracy",), SHORT_ANSWER, 16),
        Task("docvqa", ds.load_docvqa, ("anls",), SHORT_ANSWER, 32),
        Task("infovqa", ds.load_infovqa, ("anls",), SHORT_ANSWER, 32),
        Task("chartqa", ds.load_chartqa, ("relaxed_accuracy",), SHORT_ANSWER, 16),
        Task("ocrbench", ds.load_ocrbench, ("ocrbench",), "", 128),
        Task("mmbench", ds.load_mmbench, ("choice_accuracy",), CHOICE_LETTER, 8, choice=True),
        # the loader reads MMMU/MMMU's Parquet files itself; the prompt depends on the question type
        Task("mmmu", ds.load_mmmu, ("mmmu_accuracy",), "", 128, parquet=False),
        Task("mathvista", ds.load_mathvista, ("mathvista_accuracy",), "", 512, parquet=False),
        Task("videomme", ds.load_videomme, ("choice_accuracy",), "", 16, parquet=False, choice=True),
        Task("mvbench", ds.load_mvbench, ("choice_accuracy",), "", 16, parquet=False, choice=True),
        Task("jsonl", ds.load_jsonl, ("exact_match",), "", 64, parquet=False),
        # the loader reads the refer toolkit's files or the lmms-lab Parquet mirror itself
        Task("refcoco", ds.load_refcoco, ("grounding_accuracy",), "", 128, parquet=False),
        Task("refcoco+", ds.load_refcoco, ("grounding_accuracy",), "", 128, parquet=False),
        Task("refcocog", ds.load_refcoco, ("grounding_accuracy",), "", 128, parquet=False),
        Task("grounding", ds.load_grounding, ("grounding_accuracy",), "", 128, parquet=False),
        Task("synthetic-caption", partial(ds.load_synthetic, kind="caption"), ("exact_match", "wer"), "", 64, False),
        Task("synthetic-vqa", partial(ds.load_synthetic, kind="vqa"), ("exact_match",), "", 16, False),
        Task(
            "synthetic-ocr",
            partial(ds.load_synthetic, kind="ocr"),
            ("exact_match", "word_accuracy", "cer"),
            "",
            32,
            False,
        ),
        Task(
            "synthetic-video",
            partial(ds.load_synthetic, kind="video"),
            ("event_second_accuracy", "video_accuracy"),
            "",
            16,
            False,
        ),
        # one-shape prompts: accuracy at IoU >= 0.5; every-shape prompts: boxes matched (eval/metrics.py)
        Task(
            "synthetic-ground",
            partial(ds.load_synthetic, kind="ground"),
            ("grounding_accuracy", "boxes_matched"),
            "",
            192,  # three boxes take about 160 tokens with the bundled model's tokenizer
            False,
        ),
    ]
}


def load_samples(task: Task, data: Path) -> list[Sample]:
    """The task's samples from a local copy: a folder of Parquet files when it holds any, else the
    task's published layout."""
    data = Path(data)
    if not data.exists():
        raise DataError(f"{data}: no such file or directory")
    if task.parquet and (data.suffix == ".parquet" or (data.is_dir() and any(data.rglob("*.parquet")))):
        return ds.load_parquet(data, choice=task.choice)
    try:
        return task.load(data)
    except (KeyError, TypeError) as err:
        raise DataError(f"{data}: not in the {task.name} layout (missing field {err})") from None


def conversation(sample: Sample, prompt: str) -> list[dict]:
    """The chat the model answers: the sample's image/video, then its question and the task prompt."""
    if sample.messages is not None:
        return sample.messages
    content = []
    for image in ([sample.image] if sample.image is not None else []) + sample.more_images:
        image = image.load() if isinstance(image, ds.ParquetImage) else image
        content.append({"type": "image", "image": image})
    if sample.video is not None:
        content.append({"type": "video", "video": sample.video, **sample.meta.get("video_options", {})})
    text = f"{sample.question}\n{prompt}" if prompt else sample.question
    content.append({"type": "text", "text": text})
    return [{"role": "user", "content": content}]


def grounding_frame(sample: Sample, model_type: str, image_settings) -> dict:
    """How the model's coordinates for the sample's image map to its original pixels (the fields
    of qwen_vl.grounding.Frame), for the grounding metric."""
    from qwen_vl.grounding import frame_for
    from qwen_vl.processing import load_image

    width, height = sample.meta.get("width"), sample.meta.get("height")
    if not width or not height:
        image = sample.image.load() if isinstance(sample.image, ds.ParquetImage) else sample.image
        width, height = load_image(image).size
    return asdict(frame_for(model_type, int(width), int(height), image_settings))
