"""The build script and its configs: each step reads what an earlier one wrote, and the stages chain."""

import re
import subprocess
from pathlib import Path

from qwen_vl.training.config import load_config

REPO = Path(__file__).resolve().parents[2]


def bundled_build() -> tuple[str, list, list]:
    """The bundled model's build script and the trainer configs it runs before stage 3's passes and after them."""
    build = (REPO / "bundled_model/build.sh").read_text()
    head, tail = build.split("for pass in ")
    numbers = head.split("for n in ")[1].split(";")[0].split(), re.findall(r"^stage (\d+)$", tail, re.MULTILINE)
    before, after = ([load_config(REPO / f"bundled_model/configs/stage{n}.yaml") for n in part] for part in numbers)
    return build, before, after


def build_command(build: str, program: str) -> str:
    """The arguments the build script gives `program` (its first call), continued lines joined."""
    return build.replace("\\\n", " ").split(f"{program} ")[1].split("\n")[0]


def test_bundled_model_configs_chain_from_stage_to_stage():
    build, before, after = bundled_build()
    reading, vision = (
        build_command(build, f"bundled_model.{step}").split() for step in ("pretrain_reading", "pretrain_vision")
    )
    # stage 0 twice: untrained (its fixed embeddings and tokenizer, for the vision step), then trained
    untrained, stage0 = (
        call.split("\n")[0].split() for call in build.replace("\\\n", " ").split("bundled_model.pretrain_llm ")[1:]
    )
    assert untrained[untrained.index("--steps") + 1] == "0" and int(stage0[stage0.index("--steps") + 1]) > 0

    def options(call: list[str]) -> dict[str, str]:  # what shapes the model and the processor
        return {
            w: v
            for w, v in zip(call, call[1:], strict=False)
            if w.startswith("--") and w not in ("--out", "--steps", "--lines", "--chats")
        }

    # no options that shape the model or the processor: both calls write pretrain_llm's own embeddings and
    # image settings
    assert options(untrained) == options(stage0) == {}
    assert reading[reading.index("--llm") + 1] == stage0[stage0.index("--out") + 1]  # stage 0b reads stage 0
    assert vision[vision.index("--llm") + 1] == untrained[untrained.index("--out") + 1]  # the vision step, its words
    assert before[0].init["llm"] == reading[reading.index("--out") + 1]  # stage 1 starts from the stage-0b LLM
    from bundled_model.pretrain_reading import parse_args

    checked = parse_args([word for word in reading if word != "&"])
    assert checked.min_answers > 0  # a stage 0b that did not form stops the build
    for loop in (before, after):
        for earlier, later in zip(loop[:-1], loop[1:], strict=True):
            assert later.init["model"] == f"{earlier.output_dir}/final"
    # stage 3's passes: the first reads the last stage before them, each writes what the next reads, the
    # stages after them start from the last pass
    passes = build.split("for pass in ")[1].split(";")[0].split()
    video_time = build_command(build, "-m bundled_model.video_time")
    assert build.split("\nfrom=")[1].split()[0] == f"{before[-1].output_dir}/final"
    assert '--model "$from" --out "runs/bundled/stage3_$pass"' in video_time and len(set(passes)) == len(passes) >= 2
    assert after[0].init["model"] == f"runs/bundled/stage3_{passes[-1]}"
    assert f"bundled_model.install {after[-1].output_dir}/final\n" in build
    # a rebuild starts from an empty runs/bundled, where every stage writes: the trainer refuses to start
    # over an earlier run's checkpoints
    assert build.index("\nrm -rf runs/bundled\n") < build.index('say "data"')
    assert all(config.output_dir.startswith("runs/bundled/") for config in before + after)
    # the stages run as several processes, each with a share of the config's batch
    processes = int(build.split("--num_processes ")[1].split()[0])
    share = int(build.split("--set batch_size=")[1].split()[0])
    assert processes > 1 and all(config.batch_size == share * processes for config in before + after)


def test_bundled_model_build_reads_only_data_its_data_step_writes():
    """Every JSONL the vision step reads is one the build's data step writes before it, and every JSONL
    the stages read one it writes at all (a wrong path would otherwise surface an hour into the build).
    The data step runs with `synthetic` stubbed out."""
    from bundled_model.synthetic import TASKS

    build, before, after = bundled_build()
    data_step = build.split("synthetic() {")[1].split("\n", 1)[1].split("\n# 2.")[0]
    stub = (
        'synthetic() { local out="" task=""; while (($#)); do case $1 in --out) out=$2; shift;; '
        "--task) task=$2; shift;; esac; shift; done; "
        f'[ "$task" = all ] && task="{" ".join(TASKS)}"; for t in $task; do echo "$out/$t.jsonl"; done; }}\n'
    )

    def bash_words(script: str) -> set[str]:
        return set(subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout.split())

    before_vision = bash_words(stub + data_step + "\nvision_data")
    written = before_vision | bash_words(stub + data_step + "\nstage_data")
    vision = build_command(build, "bundled_model.pretrain_vision").split("--data ")[1].split(" --")[0]
    read = bash_words(f"echo {vision}")
    assert "data/bundled/train2/ocr.jsonl" in read and len(read) > 3
    assert read <= before_vision, sorted(read - before_vision)
    read = {source.path for config in before + after for source in config.data}
    video_time = build_command(build, "-m bundled_model.video_time").split("--data ")[1].split(" --")[0]
    read |= {word.rsplit(":", 1)[0] for word in bash_words(f"echo {video_time}")}  # its PATH:WEIGHT items
    assert "data/bundled/train2/video.jsonl" in read and len(read) > 5
    assert read <= written, sorted(read - written)
