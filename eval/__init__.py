"""Benchmarks for qwen-vl models: loaders for local copies of VQAv2, TextVQA, DocVQA, InfoVQA,
ChartQA, OCRBench, MMBench (published layouts and Hugging Face Parquet mirrors), generic and
synthetic JSON Lines sets; the standard metrics; a resumable, data-parallel runner.

    python -m qwen_vl.eval --task textvqa --data DIR --model DIR     (same as `qwen-vl eval ...`)
"""
