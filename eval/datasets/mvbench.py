"""MVBench in the layout of its Hugging Face release (OpenGVLab/MVBench; Li et al. 2024).

    DIR/json/<task>.json   [{"video": "<file or frame folder>", "question", "candidates": [...],
                             "answer": "<the right candidate's text>", "start"?, "end"? (seconds)}]
    DIR/video/<source folder>/<video>   the folders of MVBench's task table (star/Charades_v1_480,
                                        ssv2_video, clevrer/video_validation, ...); Episodic
                                        Reasoning's videos are folders of frames (00001.jpg, ...,
                                        taken at 3 fps)

Twenty tasks of 200 questions. The prompt follows MVBench's: its instruction, "Question: ...",
"Options:" and "(A) candidate" lines; then the letter instruction (MVBench opens the answer with
"Best option:(", which a chat run cannot). Frames follow MVBench's sampling: 16 per clip, within
the task's start/end bound when it has one; from a frame folder the 16 frames MVBench picks (the
middles of 16 equal segments, frames numbered from 1); from a video file 16 frames the processor
spreads evenly over the clip (first to last, where MVBench takes segment middles).
"""

from __future__ import annotations

from pathlib import Path

from qwen_vl.eval.datasets.base import DataError, Sample, check_unique, find_files, read_json, resolve_media

MVBENCH_INSTRUCTION = (
    "Carefully watch the video and pay attention to the cause and sequence of events, the detail and "
    "movement of objects, and the action and pose of persons. Based on your observations, select the best "
    "option that accurately addresses the question."
)
MVBENCH_LETTER = "Answer with the option's letter from the given choices directly."
MVBENCH_FRAMES = 16
FRAME_FOLDER_FPS = 3
# json stem -> (task name, source folder under video/, frames in a folder, bounded by start/end)
MVBENCH_TASKS = {
    "action_sequence": ("Action Sequence", "star/Charades_v1_480", False, True),
    "action_prediction": ("Action Prediction", "star/Charades_v1_480", False, True),
    "action_antonym": ("Action Antonym", "ssv2_video", False, False),
    "fine_grained_action": ("Fine-grained Action", "Moments_in_Time_Raw/videos", False, False),
    "unexpected_action": ("Unexpected Action", "FunQA_test/test", False, False),
    "object_existence": ("Object Existence", "clevrer/video_validation", False, False),
    "object_interaction": ("Object Interaction", "star/Charades_v1_480", False, True),
    "object_shuffle": ("Object Shuffle", "perception/videos", False, False),
    "moving_direction": ("Moving Direction", "clevrer/video_validation", False, False),
    "action_localization": ("Action Localization", "sta/sta_video", False, True),
    "scene_transition": ("Scene Transition", "scene_qa/video", False, False),
    "action_count": ("Action Count", "perception/videos", False, False),
    "moving_count": ("Moving Count", "clevrer/video_validation", False, False),
    "moving_attribute": ("Moving Attribute", "clevrer/video_validation", False, False),
    "state_change": ("State Change", "perception/videos", False, False),
    "fine_grained_pose": ("Fine-grained Pose", "nturgbd", False, False),
    "character_order": ("Character Order", "perception/videos", False, False),
    "egocentric_navigation": ("Egocentric Navigation", "vlnqa", False, False),
    "episodic_reasoning": ("Episodic Reasoning", "tvqa/frames_fps3_hq", True, True),
    "counterfactual_inference": ("Counterfactual Inference", "clevrer/video_validation", False, False),
}


def segment_middles(count: int, fps: float, bound: tuple[float, float] | None, first: int = 0) -> list[int]:
    """MVBench's frame indices: the clip (its bound in seconds, else everything) cut into 16 equal
    segments, the frame nearest each segment's middle."""
    start, end = bound if bound else (-100_000, 100_000)
    start_index = max(first, round(start * fps))
    end_index = min(round(end * fps), count)
    size = (end_index - start_index) / MVBENCH_FRAMES
    return [int(start_index + size / 2 + round(size * i)) for i in range(MVBENCH_FRAMES)]


def mvbench_question(item: dict) -> str:
    lines = [MVBENCH_INSTRUCTION, f"Question: {item['question']}", "Options:"]
    lines += [f"({chr(ord('A') + i)}) {candidate}" for i, candidate in enumerate(item["candidates"])]
    return "\n".join([*lines, MVBENCH_LETTER])


def _bound(item: dict, bounded: bool) -> tuple[float, float] | None:
    if bounded and item.get("start") is not None and item.get("end") is not None:
        return float(item["start"]), float(item["end"])
    return None


def _video(item: dict, roots: list[Path], folder: str, frames: bool, bound) -> tuple[str | list[str], dict]:
    """What the model watches (a file, or a list of frame files) and the reader's options."""
    where = resolve_media(f"{folder}/{item['video']}".rstrip("/"), roots)
    if not frames:
        window = {"video_start": bound[0], "video_end": bound[1]} if bound else {}
        return where, {"nframes": MVBENCH_FRAMES, **window}
    frame_folder = Path(where)
    if not frame_folder.is_dir():
        return where, {}  # fails at run time, naming the folder
    count = sum(1 for _ in frame_folder.iterdir())
    picked = segment_middles(count, FRAME_FOLDER_FPS, bound, first=1)
    return [str(frame_folder / f"{index:05d}.jpg") for index in picked], {"fps": FRAME_FOLDER_FPS}


def load_mvbench(root: Path) -> list[Sample]:
    files = [
        p for p in find_files(root, ("*.json",), "MVBench task file (json/<task>.json)") if p.stem in MVBENCH_TASKS
    ]
    if not files:
        raise DataError(f"{root}: no MVBench task files (json/<task>.json, e.g. action_sequence.json)")
    samples = []
    for path in files:
        name, folder, frames, bounded = MVBENCH_TASKS[path.stem]
        items = read_json(path)
        if not isinstance(items, list):
            raise DataError(f"{path}: not an MVBench task file (expected a list of questions)")
        base = path.parent.parent if path.parent.name == "json" else path.parent
        roots = [base / "video", base]
        for position, item in enumerate(items):
            candidates = [str(c) for c in item["candidates"]]
            if item["answer"] not in candidates:
                raise DataError(f"{path}: question {position}: the answer is not one of the candidates")
            video, options = _video(item, roots, folder, frames, _bound(item, bounded))
            samples.append(
                Sample(
                    id=f"{path.stem}:{position}",
                    question=mvbench_question(item),
                    answers=[chr(ord("A") + candidates.index(item["answer"]))],
                    video=video,
                    category=name,
                    meta={
                        "options": {chr(ord("A") + i): c for i, c in enumerate(candidates)},
                        "video_options": options,
                    },
                )
            )
    return check_unique(samples, root)
