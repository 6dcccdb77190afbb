"""Loaders for local copies of the benchmarks, one module per published layout."""

from qwen_vl.eval.datasets.base import DataError, Sample
from qwen_vl.eval.datasets.chartqa import load_chartqa
from qwen_vl.eval.datasets.docvqa import load_docvqa, load_infovqa
from qwen_vl.eval.datasets.jsonl import load_jsonl, load_synthetic
from qwen_vl.eval.datasets.mathvista import load_mathvista
from qwen_vl.eval.datasets.mmbench import load_mmbench
from qwen_vl.eval.datasets.mmmu import load_mmmu
from qwen_vl.eval.datasets.mvbench import load_mvbench
from qwen_vl.eval.datasets.ocrbench import load_ocrbench
from qwen_vl.eval.datasets.parquet import ParquetImage, load_parquet
from qwen_vl.eval.datasets.refcoco import load_grounding, load_refcoco
from qwen_vl.eval.datasets.textvqa import load_textvqa
from qwen_vl.eval.datasets.videomme import load_videomme
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
    "load_mathvista",
    "load_mmbench",
    "load_mmmu",
    "load_mvbench",
    "load_ocrbench",
    "load_parquet",
    "load_grounding",
    "load_refcoco",
    "load_textvqa",
    "load_videomme",
    "load_vqav2",
]
