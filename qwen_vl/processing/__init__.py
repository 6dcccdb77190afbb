"""Media and text processing: images, videos, chat template, tokenizer, batched processor."""

from qwen_vl.processing.chat import CHAT_TEMPLATE, DEFAULT_SYSTEM_PROMPT, MediaItem, media_items, render_chat
from qwen_vl.processing.image import (
    IMAGE_FACTOR,
    MAX_PIXELS,
    MAX_RATIO,
    MIN_PIXELS,
    ImageSettings,
    image_to_patches,
    load_image,
    preprocess_images,
    smart_resize,
)
from qwen_vl.processing.patches import CLIP_MEAN, CLIP_STD, patchify
from qwen_vl.processing.processor import ProcessorOutput, QwenVLProcessor
from qwen_vl.processing.tokenizer import SPECIAL_TOKENS, build_tokenizer
from qwen_vl.processing.video import (
    SampledVideo,
    VideoPatches,
    VideoSettings,
    frames_as_video,
    preprocess_video,
    read_video,
    video_to_patches,
)
from qwen_vl.processing.video_sampling import (
    FPS,
    FPS_MAX_FRAMES,
    FPS_MIN_FRAMES,
    FRAME_FACTOR,
    VIDEO_MAX_PIXELS,
    VIDEO_MIN_PIXELS,
    VIDEO_TOTAL_PIXELS,
    frame_max_pixels,
    frame_range,
    sample_frame_count,
    sample_indices,
)

__all__ = [
    "CHAT_TEMPLATE", "DEFAULT_SYSTEM_PROMPT", "MediaItem", "media_items", "render_chat",
    "IMAGE_FACTOR", "MAX_PIXELS", "MAX_RATIO", "MIN_PIXELS", "ImageSettings", "image_to_patches",
    "load_image", "preprocess_images", "smart_resize", "CLIP_MEAN", "CLIP_STD", "patchify",
    "ProcessorOutput", "QwenVLProcessor", "SPECIAL_TOKENS", "build_tokenizer",
    "SampledVideo", "VideoPatches", "VideoSettings", "frames_as_video", "preprocess_video",
    "read_video", "video_to_patches", "FPS", "FPS_MAX_FRAMES", "FPS_MIN_FRAMES", "FRAME_FACTOR",
    "VIDEO_MAX_PIXELS", "VIDEO_MIN_PIXELS", "VIDEO_TOTAL_PIXELS", "frame_max_pixels",
    "frame_range", "sample_frame_count", "sample_indices",
]
