"""The transformers-free tokenizer gives the same ids, text and prompts as transformers'."""

import pytest
from PIL import Image

from qwen_vl.processing import QwenVLProcessor
from tests.tiny import save_tiny_model_dir

CONVERSATIONS = [
    [{"role": "user", "content": "Hello there, 你好 🙂"}],
    [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "image", "image": Image.new("RGB", (60, 90), "red")},
                {"type": "text", "text": "Describe this image."},
            ],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "a red square"}]},
        {"role": "user", "content": [{"type": "text", "text": "And the colour?"}]},
    ],
]


@pytest.fixture(scope="module")
def processors(tmp_path_factory):
    model_dir = save_tiny_model_dir(tmp_path_factory.mktemp("light"))
    return QwenVLProcessor.from_pretrained(model_dir), QwenVLProcessor.from_pretrained(model_dir, light_tokenizer=True)


@pytest.mark.parametrize("conversation", CONVERSATIONS)
@pytest.mark.parametrize("generation_prompt", [True, False])
def test_same_prompt_and_ids(processors, conversation, generation_prompt):
    full, light = processors
    assert light.apply_chat_template(conversation, generation_prompt) == full.apply_chat_template(
        conversation, generation_prompt
    )
    a = full([conversation], add_generation_prompt=generation_prompt)
    b = light([conversation], add_generation_prompt=generation_prompt)
    assert a["input_ids"].tolist() == b["input_ids"].tolist()


def test_same_special_ids_and_decoding(processors):
    full, light = processors
    ft, lt = full.tokenizer, light.tokenizer
    assert (lt.eos_token_id, lt.pad_token_id, len(lt)) == (ft.eos_token_id, ft.pad_token_id, len(ft))
    assert lt.get_vocab() == ft.get_vocab()
    ids = ft("a red circle <|im_end|> 你好 🙂", add_special_tokens=False)["input_ids"]
    assert lt.encode("a red circle <|im_end|> 你好 🙂") == ids
    for skip in (True, False):
        assert lt.decode(ids, skip_special_tokens=skip) == ft.decode(ids, skip_special_tokens=skip)
    assert lt.decode(ids[:-1]) == ft.decode(ids[:-1])  # ends inside the emoji's bytes
