"""Loaders for local copies of the benchmarks, one module per published layout."""

from qwen_vl.eval.datasets.base import DataError, Sample
from qwen_vl.eval.datasets.chartqa import load_chartqa
from qwen_vl.eval.datasets.docvqa import load_docvqa, load_infovqa
from qwen_vl.eval.datasets.jsonl import load_jsonl, load_synthetic
from qwen_vl.eval.datasets.mmbench import load_mmbench
from qwen_vl.eval.datasets.ocrbench import load_ocrbench
from qwen_vl.eval.datasets.parquet import ParquetImage, load_parquet
from qwen_vl.eval.datasets.refcoco import load_grounding, load_refcoco
from qwen_vl.eval.datasets.textvqa import load_textvqa
from qwen_vl.eval.datasets.vqav2 import load_vqav2

__all__ = [
    "DataError",
    "Sample",
    "ParquetImage",
    "load_chartqa",
    "load_docvqa",
    "load_infovqa",
    "load_jsonl",
    "load_synthetic",
    "load_mmbench",
    "load_ocrbench",
    "load_parquet",
    "load_grounding",
    "load_refcoco",
    "load_textvqa",
    "load_vqav2",
]
