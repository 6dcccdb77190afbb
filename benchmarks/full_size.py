"""Full-size checkpoints on CPU: ours, transformers and llama.cpp side by side, in one run.

A random-weight checkpoint with the published Qwen2.5-VL-3B (or, with --size 7b, 7B) shapes is
built once in the cache folder (bf16 safetensors shards, a stand-in byte-level tokenizer whose
special tokens sit at the published ids, the published preprocessor config, a chat template).
Every engine then runs in its own subprocess, one after the other, so that its peak RSS is its
own: ours (bf16, int8, int4 through `qwen_vl.loading.load_model`), transformers (bf16,
`Qwen2_5_VLForConditionalGeneration` + `AutoProcessor`) and llama.cpp (the text model converted
with llama.cpp's own converter, bf16 / Q8_0 / Q4_0, timed with llama-bench).

Measured per engine: load time, RSS right after loading and peak RSS over the whole run
(VmHWM), prefill of a 640x480 and a 1280x720 image prompt (ours and transformers; best of
--repeats), prefill of a 512-token text prompt (as tokens/s, comparable with llama-bench's
pp512), and decode tokens/s (greedy, --new-tokens after the 640x480 prompt; llama-bench's tg).
Decode is also given as a fraction of the read-bandwidth bound: the bytes of weights one decode
step reads (text decoder + output head) against the read bandwidth measured in the same run
(a torch.sum over 1 GiB, before and after the engines). Prefill is also set against its floor:
the time the prompt's kernels take alone, one bf16 F.linear per weight plus the attention calls
(PyTorch's scaled_dot_product_attention), which ours and transformers both run, so the table shows
how far any engine built on them could go. Our CPU kernels are compiled before the load is timed
(once per machine, then cached).

    bash benchmarks/build_llama_cpp.sh           # once; without it the llama.cpp rows are skipped
    python benchmarks/full_size.py [--size 3b|7b] [--quick] [--skip ENGINE ...] [--cache DIR]

Engines: ours-bf16 ours-int8 ours-int4 transformers llama-bf16 llama-q8_0 llama-q4_0
(`--skip llama` leaves out all three llama.cpp rows, `--skip ours` all of ours).
The cache folder (default $QWEN_VL_BENCH_CACHE or ~/.cache/qwen-vl-bench) holds the checkpoint
(7.5 GB for 3B, 16.6 GB for 7B), the llama.cpp build and the GGUF files.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import inspect
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from qwen_vl.processing.chat import CHAT_TEMPLATE
from qwen_vl.processing.image import ImageSettings
from qwen_vl.processing.processor import preprocessor_config, video_preprocessor_config
from qwen_vl.processing.tokenizer import SPECIAL_TOKENS
from qwen_vl.processing.video import VideoSettings

DEFAULT_CACHE = Path(os.environ.get("QWEN_VL_BENCH_CACHE", Path.home() / ".cache" / "qwen-vl-bench"))
ENGINES = ["ours-bf16", "ours-int8", "ours-int4", "transformers", "llama-bf16", "llama-q8_0", "llama-q4_0"]
GROUPS = {"ours": ENGINES[:3], "llama": ENGINES[4:], "llama.cpp": ENGINES[4:]}
GGUF_TYPES = {"llama-bf16": "BF16", "llama-q8_0": "Q8_0", "llama-q4_0": "Q4_0"}

# ---- the published shapes ----------------------------------------------------------------------
SIZES = {
    "3b": dict(
        hidden_size=2048,
        intermediate_size=11008,
        num_hidden_layers=36,
        num_attention_heads=16,
        num_key_value_heads=2,
        tie=True,
    ),
    "7b": dict(
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        tie=False,
    ),
}
VOCAB = 151936
# Qwen2.5's added tokens, from 151643 on; the first 14 are special (never split from text).
ADDED_TOKENS = [
    *SPECIAL_TOKENS,  # the first 14: special, never split from text
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
]
FIRST_ADDED_ID = 151643
N_SPECIAL = len(SPECIAL_TOKENS)
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
PREPROCESSOR = preprocessor_config(ImageSettings())  # the published defaults, as our processor writes them
CHECKPOINT_VERSION = "2"  # bump to rebuild cached checkpoints after a format change


def model_config(size: str):
    from qwen_vl.config import QwenVLConfig, TextConfig, VisionConfig

    s = SIZES[size]
    text = TextConfig(
        vocab_size=VOCAB,
        hidden_size=s["hidden_size"],
        intermediate_size=s["intermediate_size"],
        num_hidden_layers=s["num_hidden_layers"],
        num_attention_heads=s["num_attention_heads"],
        num_key_value_heads=s["num_key_value_heads"],
        max_position_embeddings=128000,
    )
    vision = VisionConfig(
        hidden_size=1280,
        depth=32,
        num_heads=16,
        intermediate_size=3420,
        out_hidden_size=s["hidden_size"],
        window_size=112,
        fullatt_block_indexes=[7, 15, 23, 31],
        tokens_per_second=2,
    )
    return QwenVLConfig(
        vision=vision,
        text=text,
        tie_word_embeddings=s["tie"],
        bos_token_id=151643,
        eos_token_id=151645,
        torch_dtype="bfloat16",
    )


# ---- building the checkpoint -------------------------------------------------------------------
def checkpoint_shapes(config) -> dict:
    """{key: shape} of the checkpoint's tensors (the published older key layout), without memory."""
    import torch

    from qwen_vl.modeling.model import QwenVLForConditionalGeneration

    with torch.device("meta"):
        model = QwenVLForConditionalGeneration(config)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if config.tie_word_embeddings:
        shapes.pop("lm_head.weight", None)
    return shapes


def build_checkpoint(size: str, model_dir: Path, shard_bytes: int = 2 * 1024**3) -> None:
    """Random bf16 weights (std 0.02; norm scales 1), written one shard at a time."""
    import torch
    from safetensors.torch import save_file

    marker = model_dir / ".complete"
    if marker.is_file() and marker.read_text().strip() == CHECKPOINT_VERSION:
        return
    print(f"building the random-weight {size} checkpoint in {model_dir} ...", flush=True)
    start = time.perf_counter()
    model_dir.mkdir(parents=True, exist_ok=True)
    for old in model_dir.glob("*.safetensors"):
        old.unlink()
    config = model_config(size)
    shapes = checkpoint_shapes(config)
    groups, current, nbytes = [], [], 0
    for key, shape in shapes.items():
        size_of = 2 * _numel(shape)
        if current and nbytes + size_of > shard_bytes:
            groups.append(current)
            current, nbytes = [], 0
        current.append(key)
        nbytes += size_of
    groups.append(current)
    weight_map, total = {}, 0
    gen = torch.Generator().manual_seed(0)
    for i, keys in enumerate(groups, 1):
        name = f"model-{i:05d}-of-{len(groups):05d}.safetensors"
        shard = {}
        for key in keys:
            t = torch.empty(shapes[key], dtype=torch.bfloat16)
            if len(shapes[key]) == 1 and key.endswith(".weight"):  # RMSNorm scales
                t.fill_(1.0)
            else:
                t.normal_(0.0, 0.02, generator=gen)
            shard[key] = t
            total += t.numel() * 2
        save_file(shard, str(model_dir / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in keys})
        del shard
        gc.collect()
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (model_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    config.save_pretrained(model_dir)
    (model_dir / "generation_config.json").write_text(
        json.dumps(
            {"bos_token_id": 151643, "eos_token_id": [151645, 151643], "pad_token_id": 151643, "do_sample": False},
            indent=2,
        )
        + "\n"
    )
    write_tokenizer(model_dir)
    (model_dir / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR, indent=2) + "\n")
    video = video_preprocessor_config(VideoSettings())
    (model_dir / "video_preprocessor_config.json").write_text(json.dumps(video, indent=2) + "\n")
    (model_dir / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    marker.write_text(CHECKPOINT_VERSION + "\n")
    print(f"built in {time.perf_counter() - start:.0f} s: {total / 1e9:.2f} GB in {len(groups)} shards", flush=True)


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _byte_chars() -> list[str]:
    """GPT-2's byte-to-unicode table, in byte order (what byte-level BPE vocabularies spell)."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return [table[b] for b in range(256)]


def write_tokenizer(model_dir: Path) -> None:
    """A byte-level BPE stand-in: 256 byte tokens, one merge ("Ġ t"), unreachable fillers up to
    151642, then Qwen2.5's added tokens at their published ids (151643-151664)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    vocab = {ch: i for i, ch in enumerate(_byte_chars())}
    vocab["Ġt"] = len(vocab)
    for i in range(len(vocab), FIRST_ADDED_ID):
        vocab[f"<|filler_{i}|>"] = i
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[("Ġ", "t")], fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.add_tokens([AddedToken(t, special=i < N_SPECIAL, normalized=False) for i, t in enumerate(ADDED_TOKENS)])
    for i, t in enumerate(ADDED_TOKENS):
        assert tok.token_to_id(t) == FIRST_ADDED_ID + i, (t, tok.token_to_id(t))
    tok.save(str(model_dir / "tokenizer.json"))
    (model_dir / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "Qwen2Tokenizer",
                "bos_token": None,
                "eos_token": "<|im_end|>",
                "pad_token": "<|endoftext|>",
                "unk_token": None,
                "errors": "replace",
                "add_prefix_space": False,
                "clean_up_tokenization_spaces": False,
                "split_special_tokens": False,
                "model_max_length": 131072,
            },
            indent=2,
        )
        + "\n"
    )


# ---- prompts -----------------------------------------------------------------------------------
IMAGES = {"640x480": (640, 480), "1280x720": (1280, 720)}


def build_prompts(model_dir: Path, path: Path, text_tokens: int) -> dict:
    """The same inputs for every engine: two image prompts, a warm-up prompt, a text prompt."""
    import numpy as np
    import torch
    from PIL import Image

    from qwen_vl.processing import QwenVLProcessor

    processor = QwenVLProcessor.from_pretrained(model_dir, light_tokenizer=True)
    rng = np.random.default_rng(0)
    prompts = {}
    for name, (w, h) in {**IMAGES, "warmup": (224, 224)}.items():
        pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        conv = [
            {
                "role": "user",
                "content": [
                    {"type": "image", "image": Image.fromarray(pixels)},
                    {"type": "text", "text": "Describe this image."},
                ],
            }
        ]
        out = processor([conv], add_generation_prompt=True)
        prompts[name] = {k: getattr(out, k) for k in ("input_ids", "attention_mask", "pixel_values", "image_grid_thw")}
    ids = torch.randint(1000, 150000, (1, text_tokens), generator=torch.Generator().manual_seed(2))
    prompts["text"] = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    torch.save(prompts, path)
    return prompts


# ---- measurements shared by the workers ----------------------------------------------------------
def rss_bytes(field: str = "VmHWM") -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def best_of(repeats: int, fn) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def read_bandwidth(threads: int) -> float:
    """Bytes/s of summing a 1 GiB float32 tensor (best of 5)."""
    import torch

    torch.set_num_threads(threads)
    x = torch.ones(256 * 1024 * 1024)
    x.sum()
    bw = x.numel() * 4 / best_of(5, x.sum)
    del x
    return bw


def prefill_products(config, grid_thw, tokens: int) -> dict[tuple[int, int, int], int]:
    """{(rows, in, out): how many} of the weight products one prefill runs: every 2-D weight (the
    patch embedding's as the matrix it is) times the rows it sees: the tower's blocks every patch,
    the merger's layers every merged token, the decoder every prompt token, the output head the
    last one. Attention's own products (activations times activations) are not counted."""
    patches = grid_thw[0] * grid_thw[1] * grid_thw[2]
    merged = patches // config.vision.spatial_merge_size**2
    counts: dict[tuple[int, int, int], int] = {}
    for key, shape in checkpoint_shapes(config).items():
        if not key.endswith(".weight") or len(shape) < 2 or "embed_tokens" in key:
            continue
        if key.startswith("visual.merger."):
            rows = merged
        elif key.startswith("visual."):
            rows = patches
        else:
            rows = 1 if key.startswith("lm_head") else tokens
        product = (rows, _numel(shape[1:]), shape[0])
        counts[product] = counts.get(product, 0) + 1
    if config.tie_word_embeddings:  # the head is the embedding table
        product = (1, config.text.hidden_size, config.text.vocab_size)
        counts[product] = counts.get(product, 0) + 1
    return counts


def attention_seconds(config, grid_thw: list[int], tokens: int, repeats: int = 3) -> float:
    """Seconds the attention kernels of one prefill take alone: the tower's window and full-attention
    blocks through our segment attention, and causal attention over the prompt in every decoder
    layer (PyTorch's scaled_dot_product_attention underneath, as in transformers)."""
    import torch

    from qwen_vl.modeling.attention import Segments, decoder_attention, segment_attention
    from qwen_vl.modeling.windows import frame_lengths, window_partition

    vision, text = config.vision, config.text
    grid = torch.tensor([grid_thw])
    patches = torch.randn(int(grid.prod()), vision.num_heads, vision.head_dim, dtype=torch.bfloat16)
    frames = Segments.from_lengths(frame_lengths(grid))
    units = vision.window_size // vision.patch_size // vision.spatial_merge_size
    windows = Segments.from_lengths(window_partition(grid, vision.spatial_merge_size, units)[1])
    full = len(vision.fullatt_block_indexes)
    seconds = full * best_of(repeats, lambda: segment_attention(patches, patches, patches, frames, "sdpa"))
    seconds += (vision.depth - full) * best_of(
        repeats, lambda: segment_attention(patches, patches, patches, windows, "sdpa")
    )
    head_dim = text.head_dim or text.hidden_size // text.num_attention_heads
    q = torch.randn(1, text.num_attention_heads, tokens, head_dim, dtype=torch.bfloat16)
    kv = torch.randn(1, text.num_key_value_heads, tokens, head_dim, dtype=torch.bfloat16)
    decoder_attention(q, kv, kv, None, "sdpa")  # warm-up
    return seconds + text.num_hidden_layers * best_of(repeats, lambda: decoder_attention(q, kv, kv, None, "sdpa"))


def prefill_floor(config, prompts: dict, names: list[str], threads: int, repeats: int = 3) -> dict[str, tuple]:
    """Per prompt, (seconds of its weight products alone, seconds of its attention kernels alone): one
    bf16 F.linear per weight on random data (best of `repeats` per shape), then attention_seconds.
    Their sum is the time no engine calling these kernels goes below, whatever it does around them."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    timed: dict[tuple[int, int, int], float] = {}
    floors = {}
    for name in names:
        grid, tokens = prompts[name]["image_grid_thw"][0].tolist(), prompts[name]["input_ids"].shape[1]
        counts = prefill_products(config, grid, tokens)
        for rows, n_in, n_out in counts:
            if (rows, n_in, n_out) not in timed:
                x = torch.randn(rows, n_in, dtype=torch.bfloat16)
                w = torch.randn(n_out, n_in, dtype=torch.bfloat16)
                F.linear(x, w)  # warm-up: oneDNN's first call on a shape plans it
                timed[rows, n_in, n_out] = best_of(repeats, lambda x=x, w=w: F.linear(x, w))
        products = sum(count * timed[product] for product, count in counts.items())
        floors[name] = (products, attention_seconds(config, grid, tokens, repeats))
    return floors


def _nbytes(t) -> int:
    return t.numel() * t.element_size()


def _key(t):
    """Identity of a tensor's memory: its storage, or the tensor itself where it has none (an
    opaque oneDNN tensor)."""
    try:
        return ("storage", t.untyped_storage().data_ptr())
    except (RuntimeError, NotImplementedError):
        return ("tensor", id(t))


def _hidden_tensors(module):
    """Tensors a module holds outside its parameters and buffers: a oneDNN-packed weight (in a
    plain attribute, never in the state dict), directly or on a helper object (fused products)."""
    import torch

    for name, value in vars(module).items():
        if name.startswith("_"):
            continue
        if isinstance(value, torch.Tensor):
            yield value
        elif (
            hasattr(value, "packed")
            and isinstance(value.packed, torch.Tensor)
            and not isinstance(value, torch.nn.Module)
        ):
            yield value.packed


def module_bytes(modules, read_per_token: bool = False) -> int:
    """Bytes of the weights `modules` hold, each storage counted once (a tied head once).

    read_per_token: what one decode step reads, where a module holding a packed copy beside its
    plain weight reads only the packed one."""
    seen, total = set(), 0

    def add(t):
        nonlocal total
        if t is None or t.device.type == "meta":
            return
        key = _key(t)
        if key not in seen:
            seen.add(key)
            total += _nbytes(t)

    for top in modules:
        for m in top.modules():
            hidden = list(_hidden_tensors(m))
            for name, t in list(m._parameters.items()) + list(m._buffers.items()):
                if read_per_token and hidden and name == "weight":
                    continue
                add(t)
            for t in hidden:
                add(t)
    return total


def decode_bytes_ours(model) -> int:
    """What one decode step reads: the decoder layers, the final norm and the output head
    (the embedding table is only indexed; where it is tied it is read once, as the head)."""
    return module_bytes([model.model.layers, model.model.norm, model.lm_head], read_per_token=True)


# ---- workers (each in its own process) -----------------------------------------------------------
def worker_ours(args, prompts) -> dict:
    import torch

    from qwen_vl import loading
    from qwen_vl.generation import SamplingConfig, decode_steps, generate_ids

    torch.set_num_threads(args.threads)
    quantize = {"ours-bf16": None, "ours-int8": "int8", "ours-int4": "int4"}[args.worker]
    kwargs = {"quantize": quantize} if quantize else {}
    from qwen_vl import kernels

    kernels.ops()  # compiled once per machine and cached (~15 s the first time): not part of loading
    start = time.perf_counter()
    model, _processor = loading.load_model(args.model_dir, device="cpu", dtype=torch.bfloat16, **kwargs)
    load_s = time.perf_counter() - start
    result = {
        "load_s": load_s,
        "load_rss": rss_bytes(),
        "weights": module_bytes([model]),
        "decode_bytes": decode_bytes_ours(model),
    }

    def prefill(batch):
        generate_ids(model, batch, SamplingConfig(max_new_tokens=1), stop_ids=set())

    prefill(prompts["warmup"])
    for name in args.images:
        result[f"prefill_{name}"] = best_of(args.repeats, lambda: prefill(prompts[name]))
        print(f"  {args.worker} prefill {name}: {result[f'prefill_{name}']:.2f} s", flush=True)
    text = prompts["text"]
    result["pp_tps"] = text["input_ids"].shape[1] / best_of(args.repeats, lambda: prefill(text))
    times, tokens = [], []
    with torch.inference_mode():
        steps = decode_steps(model, prompts["640x480"], SamplingConfig(max_new_tokens=args.new_tokens), set())
        for _, toks in steps:
            times.append(time.perf_counter())
            tokens.append(toks[0])
    result["tg_tps"] = (len(times) - 1) / (times[-1] - times[0])
    result["tokens"] = tokens
    return result


def worker_transformers(args, prompts) -> dict:
    import torch
    import transformers
    from transformers import AutoProcessor, LogitsProcessor, LogitsProcessorList, Qwen2_5_VLForConditionalGeneration

    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    start = time.perf_counter()
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        args.model_dir, dtype=torch.bfloat16, attn_implementation="sdpa"
    ).eval()
    try:
        AutoProcessor.from_pretrained(args.model_dir)
    except ImportError as err:  # its video processor needs torchvision; images and text do not
        from transformers import AutoImageProcessor, AutoTokenizer

        AutoImageProcessor.from_pretrained(args.model_dir)
        AutoTokenizer.from_pretrained(args.model_dir)
        result_note = f"AutoProcessor unavailable ({str(err).strip().splitlines()[0]}): image processor + tokenizer"
        print("  " + result_note, flush=True)
    load_s = time.perf_counter() - start
    result = {"load_s": load_s, "load_rss": rss_bytes(), "weights": module_bytes([model])}
    text_model = getattr(model.model, "language_model", model.model)
    result["decode_bytes"] = module_bytes([text_model.layers, text_model.norm, model.lm_head], read_per_token=True)
    image_token = model.config.image_token_id

    def inputs(batch):
        kw = dict(batch)
        kw["mm_token_type_ids"] = (kw["input_ids"] == image_token).int()
        return dict(**kw, do_sample=False, eos_token_id=None, pad_token_id=0)

    class Clock(LogitsProcessor):
        def __init__(self):
            self.times = []

        def __call__(self, input_ids, scores):
            self.times.append(time.perf_counter())
            return scores

    def prefill(batch):
        with torch.inference_mode():
            model.generate(**inputs(batch), max_new_tokens=1)

    prefill(prompts["warmup"])
    for name in args.images:
        result[f"prefill_{name}"] = best_of(args.repeats, lambda: prefill(prompts[name]))
        print(f"  transformers prefill {name}: {result[f'prefill_{name}']:.2f} s", flush=True)
    text = prompts["text"]
    result["pp_tps"] = text["input_ids"].shape[1] / best_of(args.repeats, lambda: prefill(text))
    clock = Clock()
    batch = prompts["640x480"]
    with torch.inference_mode():
        out = model.generate(
            **inputs(batch),
            max_new_tokens=args.new_tokens,
            min_new_tokens=args.new_tokens,
            logits_processor=LogitsProcessorList([clock]),
        )
    result["tg_tps"] = (len(clock.times) - 1) / (clock.times[-1] - clock.times[0])
    result["tokens"] = out[0, batch["input_ids"].shape[1] :].tolist()
    return result


def worker_llama(args, _prompts) -> dict:
    """llama-bench on one GGUF (pp and tg in one call); peak RSS is that of llama-bench."""
    gguf = Path(args.gguf)
    cmd = [
        str(llama_bin(args.cache, "llama-bench")),
        "-m",
        str(gguf),
        "-t",
        str(args.threads),
        "-p",
        str(args.text_tokens),
        "-n",
        str(args.new_tokens),
        "-r",
        str(args.repeats),
        "-o",
        "json",
    ]
    print("  " + " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"llama-bench failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    rows = json.loads(proc.stdout)
    result = {
        "load_rss": None,
        "weights": gguf.stat().st_size,
        "decode_bytes": gguf_decode_bytes(args.cache, gguf),
        "peak_rss": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
    }
    for row in rows:
        if row.get("n_prompt", 0) > 0 and row.get("n_gen", 0) == 0:
            result["pp_tps"] = row["avg_ts"]
        elif row.get("n_gen", 0) > 0 and row.get("n_prompt", 0) == 0:
            result["tg_tps"] = row["avg_ts"]
    result["build"] = rows[0].get("build_commit", "") if rows else ""
    return result


# ---- llama.cpp: build products, conversion, quantization ----------------------------------------
def llama_dir(cache: Path) -> Path:
    return Path(cache) / "llama.cpp"


def llama_bin(cache: Path, name: str) -> Path:
    return llama_dir(cache) / "build" / "bin" / name


def gguf_decode_bytes(cache: Path, path: Path) -> int:
    """Bytes of the GGUF's tensors one decode step reads (all but an untied token_embd)."""
    sys.path.insert(0, str(llama_dir(cache) / "gguf-py"))
    from gguf import GGUFReader

    tensors = {t.name: int(t.n_bytes) for t in GGUFReader(str(path)).tensors}
    if "output.weight" in tensors:
        tensors.pop("token_embd.weight", None)
    return sum(tensors.values())


def convert_main(model_dir: str, outfile: str, cache: str) -> None:
    """Run llama.cpp's convert_hf_to_gguf.py on the text model, in this process.

    The converter names a BPE tokenizer's pre-tokenizer by hashing how it splits a test string,
    and refuses hashes it does not know. The stand-in tokenizer splits like Qwen2's (same regex)
    but its one-merge vocabulary hashes differently, so the check is replaced by "qwen2".
    Only the text model is written (the converter's Qwen2VLModel, GGUF architecture qwen2vl:
    Qwen2 with M-RoPE); the vision tower would go to a separate --mmproj file, not made here."""
    src = llama_dir(Path(cache))
    sys.path.insert(0, str(src))
    sys.path.insert(1, str(src / "gguf-py"))
    from conversion import base, qwenvl

    base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "qwen2"
    # Qwen2VLModel.set_vocab tries a sentencepiece tokenizer.model first (importing sentencepiece,
    # which it does not otherwise need) and falls back to the GPT-2-style BPE path: go there directly.
    qwenvl.Qwen2VLModel.set_vocab = lambda self: self._set_vocab_gpt2()
    sys.argv = ["convert_hf_to_gguf.py", model_dir, "--outtype", "bf16", "--outfile", outfile]
    import convert_hf_to_gguf

    convert_hf_to_gguf.main()


def prepare_gguf(args, engines: list[str]) -> dict[str, Path | str]:
    """{engine: GGUF path, or the reason it is skipped}: convert once (bf16), quantize from it."""
    out: dict[str, Path | str] = {}
    bench, quant = llama_bin(args.cache, "llama-bench"), llama_bin(args.cache, "llama-quantize")
    if not (bench.is_file() and quant.is_file()):
        reason = f"llama.cpp not built ({bench} missing): run `bash benchmarks/build_llama_cpp.sh {args.cache}`"
        return {e: reason for e in engines}
    folder = Path(args.cache) / f"gguf-{args.size}"
    folder.mkdir(parents=True, exist_ok=True)
    bf16 = folder / "text-BF16.gguf"
    if not bf16.is_file():
        print(f"converting the text model to {bf16} ...", flush=True)
        start = time.perf_counter()
        tmp = bf16.with_suffix(".part")
        proc = subprocess.run(
            [sys.executable, __file__, "--convert", str(args.model_dir), str(tmp), "--cache", str(args.cache)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            tmp.unlink(missing_ok=True)
            reason = "conversion failed: " + (proc.stderr.strip().splitlines() or ["?"])[-1]
            print(proc.stderr[-3000:], file=sys.stderr)
            return {e: reason for e in engines}
        tmp.rename(bf16)
        print(f"converted in {time.perf_counter() - start:.0f} s", flush=True)
    for engine in engines:
        kind = GGUF_TYPES[engine]
        path = folder / f"text-{kind}.gguf"
        if not path.is_file():
            print(f"quantizing to {kind} ...", flush=True)
            start = time.perf_counter()
            tmp = path.with_suffix(".part")
            proc = subprocess.run(
                [str(quant), str(bf16), str(tmp), kind, str(args.threads)], capture_output=True, text=True
            )
            if proc.returncode != 0:
                tmp.unlink(missing_ok=True)
                out[engine] = f"llama-quantize {kind} failed: " + (proc.stderr.strip().splitlines() or ["?"])[-1]
                continue
            tmp.rename(path)
            print(f"quantized in {time.perf_counter() - start:.0f} s", flush=True)
        out[engine] = path
    return out


# ---- the parent: machine facts, engines one by one, tables ---------------------------------------
def cpu_facts() -> tuple[str, list[str]]:
    name, flags = platform.processor() or "?", []
    try:
        text = Path("/proc/cpuinfo").read_text()
        m = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
        name = m.group(1).strip() if m else name
        m = re.search(r"^flags\s*:\s*(.+)$", text, re.M)
        have = set(m.group(1).split()) if m else set()
        flags = [
            f
            for f in (
                "avx2",
                "fma",
                "f16c",
                "avx512f",
                "avx512_vnni",
                "avx512_bf16",
                "amx_tile",
                "amx_int8",
                "amx_bf16",
            )
            if f in have
        ]
    except OSError:
        pass
    return name, flags


def run_worker(args, engine: str, prompts_path: Path, extra: list[str]) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out_path = Path(f.name)
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        engine,
        "--result",
        str(out_path),
        "--prompts",
        str(prompts_path),
        "--model-dir",
        str(args.model_dir),
        "--cache",
        str(args.cache),
        "--threads",
        str(args.threads),
        "--repeats",
        str(args.repeats),
        "--new-tokens",
        str(args.new_tokens),
        "--text-tokens",
        str(args.text_tokens),
        "--images",
        *args.images,
        *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, timeout=args.timeout)
    try:
        if proc.returncode != 0:
            return {"skipped": f"worker exited with {proc.returncode} (see its output above)"}
        result = json.loads(out_path.read_text())
    finally:
        out_path.unlink(missing_ok=True)
    print(f"  {engine} done in {time.perf_counter() - start:.0f} s", flush=True)
    return result


def fmt(value, spec: str, scale: float = 1.0) -> str:
    return "—" if value is None else format(value / scale, spec)


def ratio(a, b) -> str:
    return "—" if a is None or b is None or b == 0 else f"{a / b:.2f}x"


def print_tables(args, results: dict, bandwidth: float) -> None:
    cols = [
        "engine",
        "weights held GB",
        "load s",
        "RSS after load GB",
        "peak RSS GB",
        "peak / weights",
        *[f"prefill {n} s" for n in args.images],
        f"text prefill {args.text_tokens} tok/s",
        "decode tok/s",
        "decode / bound",
    ]
    print("\n| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for engine in ENGINES:
        r = results.get(engine)
        if r is None:
            continue
        if "skipped" in r:
            print(f"| {engine} | skipped: {r['skipped']} |")
            continue
        bound = bandwidth / r["decode_bytes"] if r.get("decode_bytes") else None
        cells = [
            engine,
            fmt(r.get("weights"), ".2f", 1e9),
            fmt(r.get("load_s"), ".1f"),
            fmt(r.get("load_rss"), ".2f", 1e9),
            fmt(r.get("peak_rss"), ".2f", 1e9),
            ratio(r.get("peak_rss"), r.get("weights")),
            *[fmt(r.get(f"prefill_{n}"), ".2f") for n in args.images],
            fmt(r.get("pp_tps"), ".1f"),
            fmt(r.get("tg_tps"), ".2f"),
            "—" if bound is None or r.get("tg_tps") is None else f"{r['tg_tps'] / bound:.0%} of {bound:.2f}",
        ]
        print("| " + " | ".join(cells) + " |")
    floor_cells = [fmt(args.prefill_floor.get(n), ".2f") for n in args.images]
    print("| prefill floor (products + attention alone) | | | | | | " + " | ".join(floor_cells) + " | | | |")

    def get(engine, key):
        r = results.get(engine) or {}
        return r.get(key)

    print("\nRatios (above 1 = ours faster / smaller; ours over the reference, or the reference's time over ours):\n")
    print(
        "| measure | ours bf16 vs transformers bf16 | ours bf16 vs llama.cpp bf16 | ours int8 vs llama.cpp Q8_0 | ours int4 vs llama.cpp Q4_0 |"
    )
    print("|---|---|---|---|---|")
    pairs = [
        ("ours-bf16", "transformers"),
        ("ours-bf16", "llama-bf16"),
        ("ours-int8", "llama-q8_0"),
        ("ours-int4", "llama-q4_0"),
    ]
    print(
        "| load time | "
        + " | ".join([ratio(get("transformers", "load_s"), get("ours-bf16", "load_s")), "—", "—", "—"])
        + " |"
    )
    print(
        "| peak RSS | "
        + " | ".join(ratio(get(t, "peak_rss"), get(o, "peak_rss")) if i == 0 else "—" for i, (o, t) in enumerate(pairs))
        + " |"
    )
    for n in args.images:
        print(
            f"| prefill {n} | "
            + " | ".join([ratio(get("transformers", f"prefill_{n}"), get("ours-bf16", f"prefill_{n}")), "—", "—", "—"])
            + " |"
        )
    print(
        f"| text prefill {args.text_tokens} | "
        + " | ".join(ratio(get(o, "pp_tps"), get(t, "pp_tps")) for o, t in pairs)
        + " |"
    )
    print("| decode | " + " | ".join(ratio(get(o, "tg_tps"), get(t, "tg_tps")) for o, t in pairs) + " |")

    # targets
    print("\nTargets:")
    checks = []
    o, t = results.get("ours-bf16") or {}, results.get("transformers") or {}

    def check(label, ok):
        checks.append(label)
        print(f"  {'met    ' if ok else 'NOT met' if ok is not None else 'n/a    '}  {label}")

    def val(d, k):
        return d.get(k) if isinstance(d, dict) else None

    for engine in ("ours-bf16", "ours-int8", "ours-int4"):
        r = results.get(engine) or {}
        if val(r, "peak_rss") and val(r, "weights"):
            # bf16: the checkpoint's weight bytes (what the weights are); quantized: the bytes held
            weights = args.checkpoint_bytes if engine == "ours-bf16" else r["weights"]
            what = "the checkpoint's" if engine == "ours-bf16" else "its"
            check(
                f"{engine} peak RSS {r['peak_rss'] / 1e9:.2f} GB <= 1.1x {what} weights {weights / 1e9:.2f} GB",
                r["peak_rss"] <= 1.1 * weights,
            )
    if val(o, "load_s") and val(t, "load_s"):
        check(f"load {o['load_s']:.1f} s <= transformers' {t['load_s']:.1f} s", o["load_s"] <= t["load_s"])
    if val(o, "tg_tps") and val(t, "tg_tps"):
        check(
            f"bf16 decode {o['tg_tps']:.2f} >= 1.15x transformers {t['tg_tps']:.2f} tok/s",
            o["tg_tps"] >= 1.15 * t["tg_tps"],
        )
    if val(o, "tg_tps") and val(o, "decode_bytes"):
        frac = o["tg_tps"] * o["decode_bytes"] / bandwidth
        check(f"bf16 decode at {frac:.0%} >= 85% of the bandwidth bound", frac >= 0.85)
    for ours_e, ref_e, factor in (("ours-int8", "llama-q8_0", 1.2), ("ours-int4", "llama-q4_0", 1.0)):
        a, b = val(results.get(ours_e) or {}, "tg_tps"), val(results.get(ref_e) or {}, "tg_tps")
        if a and b:
            check(f"{ours_e} decode {a:.2f} >= {factor}x {ref_e} {b:.2f} tok/s", a >= factor * b)
    for n in args.images:
        a, b = val(o, f"prefill_{n}"), val(t, f"prefill_{n}")
        if a and b:
            floor = args.prefill_floor.get(n)
            reach = f" (its kernels alone take {floor:.2f} s: at most {b / floor:.2f}x)" if floor else ""
            check(f"image {n} prefill {a:.2f} s: {b / a:.2f}x transformers' speed >= 1.3x{reach}", b / a >= 1.3)
    a, b = val(o, "pp_tps"), val(results.get("llama-bf16") or {}, "pp_tps")
    if a and b:
        check(f"text prefill {args.text_tokens}: {a:.1f} >= llama.cpp bf16 {b:.1f} tok/s", a >= b)
    a, b = o.get("tokens"), t.get("tokens")
    if a and b:
        same = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
        print(f"\nGreedy tokens, ours bf16 vs transformers bf16: the first {same} of {min(len(a), len(b))} agree")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=list(SIZES), default="3b")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--skip", nargs="*", default=[], help="engines (or groups: ours, llama) to leave out")
    parser.add_argument("--quick", action="store_true", help="one repeat, 8 new tokens, pp128, the small image only")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=None, help="prefill repeats (best of); default 2, quick 1")
    parser.add_argument("--new-tokens", type=int, default=None, help="decode tokens; default 32, quick 8")
    parser.add_argument("--text-tokens", type=int, default=None, help="text prompt length; default 512, quick 128")
    parser.add_argument("--images", nargs="*", default=None, choices=list(IMAGES))
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per engine")
    # internal: one engine in this process, or the converter
    parser.add_argument("--worker", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--prompts", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--gguf", help=argparse.SUPPRESS)
    parser.add_argument("--convert", nargs=2, metavar=("MODEL_DIR", "OUTFILE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (1 if args.quick else 2)
    args.new_tokens = args.new_tokens or (8 if args.quick else 32)
    args.text_tokens = args.text_tokens or (128 if args.quick else 512)
    if args.images is None:
        args.images = ["640x480"] if args.quick else list(IMAGES)
    skip = set()
    for name in args.skip:
        if name not in ENGINES and name not in GROUPS:
            parser.error(f"--skip {name}: not one of {', '.join(ENGINES + list(GROUPS))}")
        skip |= set(GROUPS.get(name, [name]))
    args.engines = [e for e in ENGINES if e not in skip]
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.convert:
        convert_main(*args.convert, str(args.cache))
        return
    if args.worker:
        import torch

        prompts = torch.load(args.prompts) if args.prompts else {}
        fn = (
            worker_llama
            if args.worker.startswith("llama")
            else (worker_transformers if args.worker == "transformers" else worker_ours)
        )
        result = fn(args, prompts)
        result.setdefault("peak_rss", rss_bytes())
        Path(args.result).write_text(json.dumps(result))
        return

    import torch
    import transformers

    torch.set_num_threads(args.threads)
    args.cache.mkdir(parents=True, exist_ok=True)
    args.model_dir = args.cache / f"qwen2.5-vl-{args.size}-random"
    cpu, flags = cpu_facts()
    print(f"date {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"CPU: {cpu}; flags: {' '.join(flags) or 'none of avx2/avx512/amx'}; {os.cpu_count()} logical CPUs")
    print(
        f"threads {args.threads}; torch {torch.__version__}, transformers {transformers.__version__}, "
        f"python {platform.python_version()}"
    )
    print(
        f"size {args.size}; repeats {args.repeats}; decode {args.new_tokens} tokens; text prompt "
        f"{args.text_tokens} tokens; images {', '.join(args.images)}; engines {', '.join(args.engines)}",
        flush=True,
    )

    build_checkpoint(args.size, args.model_dir)
    index = json.loads((args.model_dir / "model.safetensors.index.json").read_text())
    args.checkpoint_bytes = index["metadata"]["total_size"]
    print(f"checkpoint {args.model_dir}: {args.checkpoint_bytes / 1e9:.2f} GB of bf16 weights")
    prompts_path = args.cache / f"prompts-{args.size}-{args.text_tokens}.pt"
    prompts = build_prompts(args.model_dir, prompts_path, args.text_tokens)
    for name in args.images:
        grid = prompts[name]["image_grid_thw"][0].tolist()
        print(f"prompt {name}: grid {grid}, {prompts[name]['input_ids'].shape[1]} tokens")
    prefills_images = any(not engine.startswith("llama") for engine in args.engines)  # llama.cpp: text only
    floors = prefill_floor(model_config(args.size), prompts, args.images, args.threads) if prefills_images else {}
    for name, (products, attention) in floors.items():
        print(
            f"prefill floor {name}: weight products alone {products:.2f} s + attention kernels alone {attention:.2f} s"
        )
    args.prefill_floor = {name: sum(parts) for name, parts in floors.items()}
    del prompts
    gc.collect()

    results: dict[str, dict] = {}
    from qwen_vl import loading

    has_quantize = "quantize" in inspect.signature(loading.load_model).parameters
    llama_engines = [e for e in args.engines if e.startswith("llama")]
    ggufs = prepare_gguf(args, llama_engines) if llama_engines else {}

    bandwidth_before = read_bandwidth(args.threads)
    print(f"read bandwidth {bandwidth_before / 1e9:.1f} GB/s", flush=True)
    gc.collect()
    for engine in args.engines:
        print(f"{engine} ...", flush=True)
        if engine in ("ours-int8", "ours-int4") and not has_quantize:
            results[engine] = {"skipped": "qwen_vl.loading.load_model has no `quantize` argument yet"}
        elif engine.startswith("llama") and not isinstance(ggufs.get(engine), Path):
            results[engine] = {"skipped": str(ggufs.get(engine))}
        else:
            extra = ["--gguf", str(ggufs[engine])] if engine.startswith("llama") else []
            try:
                results[engine] = run_worker(args, engine, prompts_path, extra)
            except subprocess.TimeoutExpired:
                results[engine] = {"skipped": f"ran past --timeout {args.timeout} s"}
        if "skipped" in results[engine]:
            print(f"  {engine} skipped: {results[engine]['skipped']}", flush=True)
    bandwidth_after = read_bandwidth(args.threads)
    bandwidth = (bandwidth_before + bandwidth_after) / 2
    print(
        f"\nread bandwidth {bandwidth_before / 1e9:.1f} GB/s before, {bandwidth_after / 1e9:.1f} GB/s after; "
        f"the bound uses their mean, {bandwidth / 1e9:.1f} GB/s"
    )
    print_tables(args, results, bandwidth)


if __name__ == "__main__":
    main()
