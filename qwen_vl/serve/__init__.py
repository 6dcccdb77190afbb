"""`qwen-vl serve`: an OpenAI-compatible HTTP API (POST /v1/chat/completions, GET /v1/models) whose
concurrent requests share decode steps through qwen_vl.batching.BatchEngine.

Modules: `options` (bounds and their defaults), `errors` (OpenAI's error shape), `media` (which
image/video URLs are read and how), `protocol` (request bodies -> conversation + sampling, and the
response and stream-chunk bodies), `app` (the FastAPI routes), `server` (load, build, run).
"""
