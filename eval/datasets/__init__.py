"""Loaders for local copies of the benchmarks, one module per published layout."""

from eval.datasets.base import DataError, Sample
from eval.datasets.chartqa import load_chartqa
from eval.datasets.docvqa import load_docvqa, load_infovqa
from eval.datasets.jsonl import load_jsonl, load_synthetic
from eval.datasets.mmbench import load_mmbench
from eval.datasets.ocrbench import load_ocrbench
from eval.datasets.parquet import ParquetImage, load_parquet
from eval.datasets.textvqa import load_textvqa
from eval.datasets.vqav2 import load_vqav2

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
    "load_textvqa",
    "load_vqav2",
]
