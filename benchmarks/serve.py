"""`qwen-vl serve` under load: 16 clients at once against the same 16 requests one after another
(a script, not a test).

Starts the server as a user would (`python -m qwen_vl.cli serve`), sends each request over HTTP
with an image as a data URI, greedy, and measures: total wall time of each mode and their ratio,
p50/p95 request latency, generated tokens per second; it also checks that both modes gave the
same answers (continuous batching must not change a greedy answer). Two regimes: answers as the
model ends them (the bundled model's are short, so prefill dominates), and every answer
--max-tokens long (`ignore_eos`, decode dominates). Target on the bundled model: the concurrent
total at least 3x faster than the series.

    python benchmarks/serve.py [--model DIR] [--clients 16] [--max-tokens 64] [--rounds 3] [--dtype float32]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "qwen_vl" / "assets" / "examples"
PROMPTS = [
    ("shapes.png", "Describe this image."),
    ("shapes.png", "Locate the red circle in the image and output the bbox coordinates in JSON format."),
    ("three_shapes.png", "Describe this image."),
    ("three_shapes.png", "How many shapes are there?"),
    ("colour.png", "Describe this image."),
    ("colour.png", "Locate the star in the image and output the bbox coordinates in JSON format."),
    ("three_shapes.png", "Locate every shape in the image and output the bbox coordinates in JSON format."),
    ("colour.png", "What colour is the star?"),
]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "qwen_vl.cli", "serve", "--port", str(port), "--served-model-name", "bench"]
    cmd += ["--max-batch", str(args.clients)]
    if args.model:
        cmd += ["--model", args.model]
    if args.dtype:
        cmd += ["--dtype", args.dtype]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    server = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"error: the server exited: {server.stderr.read()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return server
        except OSError:
            time.sleep(0.5)
    server.kill()
    sys.exit("error: the server did not come up in 600 s")


def request_bodies(count: int, max_tokens: int, ignore_eos: bool) -> list[dict]:
    bodies = []
    for i in range(count):
        image, question = PROMPTS[i % len(PROMPTS)]
        uri = "data:image/png;base64," + base64.b64encode((EXAMPLES / image).read_bytes()).decode()
        content = [{"type": "image_url", "image_url": {"url": uri}}, {"type": "text", "text": question}]
        bodies.append(
            {"model": "bench", "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens,
             "temperature": 0, "ignore_eos": ignore_eos}
        )  # fmt: skip
    return bodies


def post(port: int, body: dict) -> tuple[float, str, int]:
    """(latency in s, answer, completion tokens)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    start = time.perf_counter()
    with urllib.request.urlopen(request, timeout=3600) as response:
        reply = json.loads(response.read())
    return time.perf_counter() - start, reply["choices"][0]["message"]["content"], reply["usage"]["completion_tokens"]


def in_series(port: int, bodies: list[dict]):
    start = time.perf_counter()
    results = [post(port, body) for body in bodies]
    return time.perf_counter() - start, results


def concurrently(port: int, bodies: list[dict]):
    results = [None] * len(bodies)
    barrier = threading.Barrier(len(bodies) + 1)

    def client(i):
        barrier.wait()
        results[i] = post(port, bodies[i])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    return time.perf_counter() - start, results


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def report(name: str, rounds: list[tuple[float, list]]) -> float:
    """Print one mode's figures over all rounds; returns its median total time."""
    total = statistics.median(t for t, _ in rounds)
    latencies = [r[0] for _, results in rounds for r in results]
    tokens = sum(r[2] for r in rounds[0][1])
    print(
        f"{name:<12} total {total:7.2f} s (median of {len(rounds)})   latency p50 {statistics.median(latencies):6.2f} s"
        f"  p95 {percentile(latencies, 0.95):6.2f} s   {tokens} tokens, {tokens / total:7.1f} tok/s"
    )
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model directory (default: the bundled model)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--dtype", help="float32, bfloat16, ... (default: the server's default)")
    parser.add_argument("--rounds", type=int, default=3, help="repetitions of each mode (median reported)")
    args = parser.parse_args()

    import torch

    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)")
    print(f"model: {args.model or 'bundled'}; {args.clients} requests, greedy, max_tokens {args.max_tokens}")
    port = free_port()
    server = start_server(args, port)
    regimes = [
        ("answers as long as the model makes them", False),
        (f"every answer {args.max_tokens} tokens (ignore_eos, as vLLM's serving benchmark)", True),
    ]
    measured = []
    try:
        for _, ignore_eos in regimes:
            bodies = request_bodies(args.clients, args.max_tokens, ignore_eos)
            for body in bodies[:2]:  # warm-up: first-call costs are not what is measured
                post(port, body)
            series, together = [], []
            for _ in range(args.rounds):  # alternated, so that a busy spell on the machine hits both modes
                series.append(in_series(port, bodies))
                together.append(concurrently(port, bodies))
            measured.append((series, together))
    finally:
        server.terminate()
        server.wait(timeout=30)
    for (title, _), (series, together) in zip(regimes, measured, strict=True):
        print(f"\n{title}:")
        series_time = report("in series", series)
        together_time = report("concurrent", together)
        print(f"speed-up (series total / concurrent total): {series_time / together_time:.2f}x")
        answers = [[r[1] for r in results] for _, results in series + together]
        print(f"same answers in every round and mode: {'yes' if all(a == answers[0] for a in answers) else 'NO'}")


if __name__ == "__main__":
    main()
