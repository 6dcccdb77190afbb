"""Small data sets in each supported benchmark layout (field names as in the releases), for the eval tests."""

import base64
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image


def png_bytes(index: int, size=(36, 28)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, ((index * 53) % 256, (index * 97) % 256, 120)).save(buffer, format="PNG")
    return buffer.getvalue()


def save_png(path, index: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(index))


# ---- builders, one per published layout (field names as in the releases) ----------------------------


def build_vqav2(root, n=3):
    root.mkdir(parents=True, exist_ok=True)
    questions = [{"image_id": 40 + i, "question": f"What is {i}?", "question_id": 400 + i} for i in range(n)]
    annotations = [
        {
            "question_id": 400 + i,
            "image_id": 40 + i,
            "answer_type": "number" if i % 2 else "other",
            "question_type": "what is",
            "multiple_choice_answer": "two",
            "answers": [{"answer": "two", "answer_confidence": "yes", "answer_id": k + 1} for k in range(10)],
        }
        for i in range(n)
    ]
    (root / "v2_OpenEnded_mscoco_val2014_questions.json").write_text(
        json.dumps({"data_subtype": "val2014", "task_type": "Open-Ended", "questions": questions})
    )
    (root / "v2_mscoco_val2014_annotations.json").write_text(json.dumps({"annotations": annotations}))
    for i in range(n):
        save_png(root / "val2014" / f"COCO_val2014_{40 + i:012d}.jpg", i)
    return root


def build_textvqa(root, answers: list[list[str]] | None = None, missing: tuple[int, ...] = ()):
    answers = answers or [["sign"] * 10 for _ in range(3)]
    data = []
    for i, refs in enumerate(answers):
        data.append(
            {
                "question": f"what does sign {i} say?",
                "image_id": f"img{i:03d}",
                "question_id": 7000 + i,
                "answers": refs,
            }
        )
        if i not in missing:
            save_png(root / "train_images" / f"img{i:03d}.jpg", i)
    root.mkdir(parents=True, exist_ok=True)
    (root / "TextVQA_0.5.1_val.json").write_text(json.dumps({"dataset_name": "textvqa", "data": data}))
    return root


def build_docvqa(root, n=3):
    data = [
        {
            "questionId": 50 + i,
            "question": f"What is the date on page {i}?",
            "image": f"documents/doc{i}.png",
            "docId": i,
            "answers": ["1 May 1990", "May 1, 1990"],
            "question_types": ["form"],
            "data_split": "val",
        }
        for i in range(n)
    ]
    for i in range(n):
        save_png(root / "documents" / f"doc{i}.png", i)
    (root / "val_v1.0_withQT.json").write_text(
        json.dumps({"dataset_name": "docvqa", "dataset_split": "val", "data": data})
    )
    return root


def build_infovqa(root, n=3):
    data = [
        {
            "questionId": 60 + i,
            "question": f"How many people in chart {i}?",
            "image_local_name": f"{3000 + i}.jpeg",
            "answers": ["25%"],
            "answer_type": ["single span"],
        }
        for i in range(n)
    ]
    for i in range(n):
        save_png(root / "infographicsvqa_images" / f"{3000 + i}.jpeg", i)
    (root / "infographicsVQA_val_v1.0_withQT.json").write_text(
        json.dumps({"dataset_name": "infographicVQA", "data": data})
    )
    return root


def build_chartqa(root, n=2):
    for kind in ("human", "augmented"):
        items = [
            {"imgname": f"{kind}{i}.png", "query": f"What is the value of bar {i}?", "label": str(10 + i)}
            for i in range(n)
        ]
        (root / "png").mkdir(parents=True, exist_ok=True)
        (root / f"test_{kind}.json").write_text(json.dumps(items))
        for i in range(n):
            save_png(root / "png" / f"{kind}{i}.png", i)
    return root


def build_ocrbench(root):
    items = [
        {"dataset_name": "IIIT5K", "id": 0, "image_path": "IIIT5K/a.png", "question": "what is written in the image?", "answers": ["HELLO"], "type": "Regular Text Recognition"},
        {"dataset_name": "HME100k", "id": 1, "image_path": "HME100k/b.png", "question": "Please write out the expression of the formula in the image using LaTeX format.", "answers": ["x^{2}"], "type": "Handwritten Mathematical Expression Recognition"},
        {"dataset_name": "docVQA", "id": 2, "image_path": "./docVQA/c.png", "question": "What is the title?", "answers": "Report", "type": "Doc-oriented VQA"},
    ]  # fmt: skip
    for i, item in enumerate(items):
        save_png(root / "OCRBench_Images" / item["image_path"].removeprefix("./"), i)
    (root / "OCRBench.json").write_text(json.dumps(items))
    return root


MMBENCH_HEADER = [
    "index",
    "question",
    "hint",
    "A",
    "B",
    "C",
    "D",
    "answer",
    "category",
    "image",
    "source",
    "l2-category",
    "comment",
    "split",
]


def build_mmbench(root):
    root.mkdir(parents=True, exist_ok=True)
    image0 = base64.b64encode(png_bytes(0)).decode()
    image1 = base64.b64encode(png_bytes(1)).decode()
    rows = [
        [
            "11",
            "What colour is the square?",
            "",
            "red",
            "green",
            "blue",
            "",
            "B",
            "attribute",
            image0,
            "s",
            "l2",
            "",
            "dev",
        ],
        [
            "12",
            "Which shape is shown?",
            "Look closely.",
            "circle",
            "square",
            "star",
            "triangle",
            "D",
            "shape",
            image1,
            "s",
            "l2",
            "",
            "dev",
        ],
        ["13", "Is the image bright?", "nan", "yes", "no", "", "", "A", "attribute", "11", "s", "l2", "", "dev"],
    ]  # the third row shares the first row's image by index
    lines = ["\t".join(MMBENCH_HEADER)] + ["\t".join(r) for r in rows]
    (root / "MMBench_DEV_EN.tsv").write_text("\n".join(lines) + "\n")
    return root


def _image_struct(i):
    return {"bytes": png_bytes(i), "path": f"{i}.png"}


def build_parquet_textvqa(root):
    """lmms-lab/textvqa schema: the `datasets` Image feature is a struct {bytes, path}."""
    root.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            "image_id": ["a", "b", "c"],
            "question_id": [1, 2, 3],
            "question": ["q one", "q two", "q three"],
            "answers": [["x"] * 10, ["y"] * 10, ["z"] * 10],
            "image": [_image_struct(i) for i in range(3)],
        }
    )
    pq.write_table(table, root / "validation-00000-of-00001.parquet", row_group_size=2)
    return root


def build_parquet_vqav2(root):
    """lmms-lab/VQAv2 schema: answers are structs {answer, answer_confidence, answer_id}."""
    root.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            "question_type": ["what", "how many"],
            "multiple_choice_answer": ["red", "2"],
            "answers": [
                [{"answer": "red", "answer_confidence": "yes", "answer_id": k} for k in range(10)],
                [{"answer": "two", "answer_confidence": "yes", "answer_id": k} for k in range(10)],
            ],
            "image_id": [1, 2],
            "answer_type": ["other", "number"],
            "question_id": [10, 20],
            "question": ["What colour?", "How many?"],
            "image": [_image_struct(0), _image_struct(1)],
        }
    )
    pq.write_table(table, root / "validation-00000-of-00001.parquet")
    return root


def build_parquet_chartqa(root):
    """HuggingFaceM4/ChartQA schema, with the image as a raw binary column."""
    root.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {"image": [png_bytes(0), png_bytes(1)], "query": ["Value of A?", "Value of B?"], "label": [["12"], ["3.5"]]}
    )
    pq.write_table(table, root / "test-00000-of-00001.parquet")
    return root


def build_parquet_ocrbench(root):
    """echo840/OCRBench schema."""
    root.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            "dataset": ["IIIT5K", "HME100k"],
            "question": ["what is written in the image?", "Write the formula."],
            "question_type": ["Regular Text Recognition", "Handwritten Mathematical Expression Recognition"],
            "answer": [["HELLO"], ["x^{2}"]],
            "image": [_image_struct(0), _image_struct(1)],
        }
    )
    pq.write_table(table, root / "test-00000-of-00001.parquet")
    return root


def build_parquet_mmbench(root):
    """lmms-lab/MMBench schema."""
    root.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {
            "index": [5, 6],
            "question": ["Colour?", "Shape?"],
            "hint": [None, "A hint."],
            "A": ["red", "circle"],
            "B": ["blue", "square"],
            "C": [None, "star"],
            "D": [None, None],
            "answer": ["A", "C"],
            "category": ["attribute", "shape"],
            "image": [_image_struct(0), _image_struct(1)],
        }
    )
    pq.write_table(table, root / "dev-00000-of-00001.parquet")
    return root


def build_jsonl(root, rows=None):
    root.mkdir(parents=True, exist_ok=True)
    rows = rows or [
        {"id": "a", "image": "imgs/a.png", "question": "What is it?", "answers": ["a square"]},
        {"image": "imgs/b.png", "question": "Colour?", "answer": "red", "category": "colour"},
    ]
    for i, row in enumerate(rows):
        if "image" in row:
            save_png(root / row["image"], i)
    (root / "set.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def build_synthetic(root, kind="vqa"):
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(3):
        save_png(root / "images" / f"{i:06d}.png", i)
        lines.append(
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image", "image": f"images/{i:06d}.png"}, {"type": "text", "text": "How many shapes are there?"}]},
                    {"role": "assistant", "content": [{"type": "text", "text": "two"}]},
                ],
                "task": kind,
                "answer": "two",
                "scene": {"shapes": []},
            }
        )  # fmt: skip
    (root / f"{kind}.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return root


# ---- referring-expression grounding ---------------------------------------------------------------
GROUNDING_IMAGE = (64, 48)


def build_refcoco(root, refs_name="refs(unc).p", folder="refcoco"):
    """The refer toolkit's layout: DIR/<folder>/refs(unc).p + instances.json, COCO images in
    DIR/images/train2014/. Refs: one train (left out), one val with two sentences, one testA."""
    import pickle

    base = root / folder
    base.mkdir(parents=True, exist_ok=True)
    images = [
        {"id": 9 + i, "file_name": f"COCO_train2014_{9 + i:012d}.jpg", "width": 64, "height": 48} for i in range(3)
    ]
    annotations = [
        {"id": 100 + i, "image_id": 9 + i, "bbox": [4.0 + i, 6.0, 20.0, 10.5], "category_id": 1} for i in range(3)
    ]
    refs = [
        {
            "ref_id": i,
            "ann_id": 100 + i,
            "image_id": 9 + i,
            "split": split,
            "file_name": f"COCO_train2014_{9 + i:012d}_{100 + i}.jpg",
            "category_id": 1,
            "sent_ids": [10 * i + k for k in range(len(sentences))],
            "sentences": [
                {"sent_id": 10 * i + k, "sent": sent, "raw": sent.capitalize(), "tokens": sent.split()}
                for k, sent in enumerate(sentences)
            ],
        }
        for i, (split, sentences) in enumerate(
            [("train", ["man on left"]), ("val", ["red box", "the box in red"]), ("testA", ["woman right"])]
        )
    ]
    with open(base / refs_name, "wb") as handle:
        pickle.dump(refs, handle, protocol=2)
    (base / "instances.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "person"}]})
    )
    for i, image in enumerate(images):
        (root / "images" / "train2014").mkdir(parents=True, exist_ok=True)
        (root / "images" / "train2014" / image["file_name"]).write_bytes(png_bytes(i, GROUNDING_IMAGE))
    return base


def build_parquet_refcoco(root):
    """lmms-lab/RefCOCO schema: question_id, image, question, answer [expressions], segmentation,
    bbox [x, y, w, h], iscrowd, file_name; one file per split."""
    root.mkdir(parents=True, exist_ok=True)
    for split, rows in (("val", [["red box", "box in red"], ["blue box"]]), ("testA", [["green box"]])):
        n = len(rows)
        table = pa.table(
            {
                "question_id": [f"{split}{i}" for i in range(n)],
                "image": [{"bytes": png_bytes(i, GROUNDING_IMAGE), "path": f"{i}.jpg"} for i in range(n)],
                "question": ["Please carefully observe the area circled in the image."] * n,
                "answer": rows,
                "segmentation": [[1.0, 2.0, 3.0, 4.0]] * n,
                "bbox": [[2.0 + i, 3.0, 30.0, 20.0] for i in range(n)],
                "iscrowd": [0] * n,
                "file_name": [f"COCO_train2014_{i:012d}.jpg" for i in range(n)],
            }
        )
        pq.write_table(table, root / f"{split}-00000-of-00001.parquet")
    return root


def build_grounding(root):
    """The generic grounding JSON Lines: bbox as [x, y, w, h] or bbox_2d as [x1, y1, x2, y2]."""
    root.mkdir(parents=True, exist_ok=True)
    rows = [
        {"id": "g1", "image": "imgs/a.png", "query": "the red square", "bbox": [10, 8, 20, 16]},
        {"image": "imgs/b.png", "query": "blue dot", "bbox_2d": [30, 20, 40, 30], "category": "dots"},
    ]
    for i, row in enumerate(rows):
        (root / row["image"]).parent.mkdir(parents=True, exist_ok=True)
        (root / row["image"]).write_bytes(png_bytes(i, GROUNDING_IMAGE))
    (root / "boxes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def build_mmmu(root):
    """MMMU/MMMU schema: one folder per subject, options as a Python list literal, image_1..image_7."""
    columns = ["id", "question", "options", "answer", "question_type", "subfield"]
    columns += [f"image_{n}" for n in range(1, 8)]
    subjects = {
        "Art": [
            ["validation_Art_1", "Which colour is <image 1> next to <image 2>?", "['red', 'green', 'blue']", "B",
             "multiple-choice", "painting", _image_struct(0), _image_struct(1)],
        ],
        "Math": [
            ["validation_Math_1", "What is x in <image 1>?", "[]", "12.5", "open", "algebra", _image_struct(2), None],
            ["validation_Math_2", "Name the shape.", "[]", "['square', 'rhombus']", "open", "geometry", None, None],
        ],
    }  # fmt: skip
    for subject, rows in subjects.items():
        folder = root / subject
        folder.mkdir(parents=True, exist_ok=True)
        table = {name: [row[i] if i < len(row) else None for row in rows] for i, name in enumerate(columns)}
        schema = pa.schema(
            [(name, pa.string()) for name in columns[:6]]
            + [(f"image_{n}", pa.struct([("bytes", pa.binary()), ("path", pa.string())])) for n in range(1, 8)]
        )
        pq.write_table(pa.table(table, schema=schema), folder / "validation-00000-of-00001.parquet")
        pq.write_table(pa.table(table, schema=schema), folder / "dev-00000-of-00001.parquet")
    return root


def build_mathvista(root):
    """AI4Math/MathVista schema (testmini): choices list or null, precision, metadata struct, query."""
    folder = root / "data"
    folder.mkdir(parents=True, exist_ok=True)
    meta = [{"split": "testmini", "task": task, "category": "math-targeted-vqa"} for task in ("geometry", "statistics")]
    table = pa.table(
        {
            "pid": ["1", "2"],
            "question": ["Which length?", "How many bars?"],
            "image": ["images/1.jpg", "images/2.jpg"],
            "decoded_image": [_image_struct(0), _image_struct(1)],
            "choices": [["3", "4", "5"], None],
            "unit": [None, None],
            "precision": [None, None],
            "answer": ["4", "12"],
            "question_type": ["multi_choice", "free_form"],
            "answer_type": ["text", "integer"],
            "metadata": meta,
            "query": [
                "Hint: Please answer the question and provide the correct option letter, e.g., A, B, C, D, at the end."
                "\nQuestion: Which length?\nChoices:\n(A) 3\n(B) 4\n(C) 5",
                "Hint: Please answer the question requiring an integer answer and provide the final value, e.g., 1, 2, 3,"
                " at the end.\nQuestion: How many bars?",
            ],
        }
    )
    pq.write_table(table, folder / "testmini-00000-of-00001-abc.parquet")
    return root


LAYOUTS = {
    "vqav2": (build_vqav2, "vqav2", 3),
    "textvqa": (build_textvqa, "textvqa", 3),
    "docvqa": (build_docvqa, "docvqa", 3),
    "infovqa": (build_infovqa, "infovqa", 3),
    "chartqa": (build_chartqa, "chartqa", 4),
    "ocrbench": (build_ocrbench, "ocrbench", 3),
    "mmbench": (build_mmbench, "mmbench", 3),
    "parquet-textvqa": (build_parquet_textvqa, "textvqa", 3),
    "parquet-vqav2": (build_parquet_vqav2, "vqav2", 2),
    "parquet-chartqa": (build_parquet_chartqa, "chartqa", 2),
    "parquet-ocrbench": (build_parquet_ocrbench, "ocrbench", 2),
    "parquet-mmbench": (build_parquet_mmbench, "mmbench", 2),
    "jsonl": (build_jsonl, "jsonl", 2),
    "synthetic-vqa": (build_synthetic, "synthetic-vqa", 3),
    "refcoco": (build_refcoco, "refcoco", 3),
    "parquet-refcoco": (build_parquet_refcoco, "refcoco+", 4),
    "grounding": (build_grounding, "grounding", 2),
    "mmmu": (build_mmmu, "mmmu", 3),
    "mathvista": (build_mathvista, "mathvista", 2),
}
