"""Tokenizers in the real formats, built locally (no hub): CLIP, T5 and Qwen2.5-VL.

Both model sets use them: the smoke set saves them next to its tiny models, and the
full-size random-weight builders attach them to the real architectures. Byte-level
alphabets without merges (T5 as a Unigram model of < 128 pieces) keep them small; the
special tokens and the chat template are those the stage code relies on.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import CLIPTokenizer, Qwen2_5_VLProcessor, Qwen2Tokenizer, T5Tokenizer

QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# The Qwen chat format (ChatML with vision placeholders), written for this project: a system
# turn when none is given, images/videos as <|vision_start|><|image_pad|><|vision_end|>.
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or 'image' in part %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' or 'video' in part %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in part %}{{ part['text'] }}"
    "{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _byte_alphabet() -> list[str]:
    from tokenizers import pre_tokenizers

    return sorted(pre_tokenizers.ByteLevel.alphabet())


def clip_vocab() -> dict[str, int]:
    """CLIP BPE vocabulary: both specials, the byte alphabet, and each byte ending a word."""
    alphabet = _byte_alphabet()
    tokens = ["<|startoftext|>", "<|endoftext|>", *alphabet, *(c + "</w>" for c in alphabet)]
    return {token: i for i, token in enumerate(tokens)}


def clip_tokenizer() -> CLIPTokenizer:
    from transformers import CLIPTokenizer

    return CLIPTokenizer(vocab=clip_vocab(), merges=[], model_max_length=77)


def write_clip_vocab_files(folder: Path) -> None:
    """Replace tokenizer.json by vocab.json + merges.txt, the layout of the real CLIP folder."""
    from tokenizers import models

    (folder / "tokenizer.json").unlink(missing_ok=True)
    models.BPE(vocab=clip_vocab(), merges=[]).save(str(folder))


def t5_tokenizer(model_max_length: int) -> T5Tokenizer:
    """A Unigram tokenizer over ASCII characters and word-initial letters (< 128 pieces)."""
    from transformers import T5Tokenizer

    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces.append(("▁", -2.0))
    pieces += [("▁" + c, -4.0) for c in string.ascii_lowercase]
    chars = string.ascii_letters + string.digits + ".,;:!?'\"()[]{}-_/|+=*&%#@<>"
    pieces += [(c, -5.0) for c in chars]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=model_max_length)


def qwen_tokenizer() -> Qwen2Tokenizer:
    """Byte-level BPE (no merges) plus the special tokens the Qwen2.5-VL processor uses."""
    from transformers import Qwen2Tokenizer

    alphabet = _byte_alphabet()
    vocab = {token: i for i, token in enumerate([*alphabet, *QWEN_SPECIAL_TOKENS])}
    return Qwen2Tokenizer(
        vocab=vocab,
        merges=[],
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=[t for t in QWEN_SPECIAL_TOKENS if t != "<|endoftext|>"],
        model_max_length=32768,
    )


def qwen_processor(tokenizer: Qwen2Tokenizer, **sizes: int) -> Qwen2_5_VLProcessor:
    """The processor around ``tokenizer``; ``sizes`` are the image/video processor's patch,
    merge and pixel limits (``lanepaint.models.architectures.qwen_vl_processor``)."""
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    return Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(**sizes),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(**sizes),
        chat_template=QWEN_CHAT_TEMPLATE,
    )


def qwen_token_ids(tokenizer: Qwen2Tokenizer) -> dict[str, int]:
    """The config fields that must agree with the tokenizer's special-token ids."""
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    return {
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }


def set_released_generation_config(model, tokenizer: Qwen2Tokenizer) -> None:
    """The generation config of the released Qwen2.5-VL-Instruct: stop at <|im_end|> or
    <|endoftext|>, pad with <|endoftext|>. One place, so the smoke set and the full-size
    builder stop generating alike."""
    ids = qwen_token_ids(tokenizer)
    model.generation_config.eos_token_id = [ids["eos_token_id"], ids["bos_token_id"]]
    model.generation_config.pad_token_id = ids["pad_token_id"]
