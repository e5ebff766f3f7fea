"""Batched Qwen2.5-VL generation through the stock transformers model and processor."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

STATIC_CACHE_BUCKET = 512  # tokens


def to_pil(image) -> Image.Image:
    """Any image we handle (PIL, HxW gray, HxWx3/4 uint8) as an RGB PIL image."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    array = np.asarray(image)
    if array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    if array.ndim == 2:
        return Image.fromarray(array, "L").convert("RGB")
    return Image.fromarray(array[..., :3], "RGB")


def chat_text(processor, prompt: str) -> str:
    """One user turn with one image and the prompt, ready for generation."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


class VLMGenerator:
    """One image + one text prompt per item, generated in batches with left padding.

    Greedy decoding, so answers are deterministic for a given model and input. A batch that
    fails (e.g. out of memory) is retried one item at a time; an item that still fails
    yields an empty answer, which the parsers turn into ``unknown`` / FAIL.
    """

    def __init__(
        self,
        model,
        processor,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        static_cache: bool = False,
    ):
        self.model = model
        # A static KV cache lets transformers compile the decode step (CUDA graphs): ~2x
        # faster decoding for one-at-a-time calls such as the judge. The cache is sized in
        # STATIC_CACHE_BUCKET steps so prompts of slightly different length reuse one graph.
        self.static_cache = static_cache
        self.processor = processor
        self.processor.tokenizer.padding_side = "left"
        # Pixel budget per image (the processor's size = {shortest_edge: min pixels,
        # longest_edge: max pixels}); 28x28 pixels become one visual token.
        self.image_kwargs = {}
        if min_pixels or max_pixels:
            size = dict(getattr(processor.image_processor, "size", None) or {})
            if min_pixels:
                size["shortest_edge"] = min_pixels
            if max_pixels:
                size["longest_edge"] = max_pixels
            self.image_kwargs = {"size": size}
        self.failures: list[str] = []

    def _inputs(self, images, prompts):
        """Processor output on the CPU (resizing, patching, tokenizing)."""
        return self.processor(
            text=[chat_text(self.processor, p) for p in prompts],
            images=[to_pil(i) for i in images],
            padding=True,
            return_tensors="pt",
            **({"images_kwargs": self.image_kwargs} if self.image_kwargs else {}),
        )

    def _generate_batch(
        self, images, prompts, max_new_tokens: int, min_new_tokens: int, inputs=None
    ):
        import torch

        if inputs is None:
            inputs = self._inputs(images, prompts)
        inputs = inputs.to(self.model.device)
        cache = {}
        if self.static_cache and self.model.device.type == "cuda":
            need = inputs["input_ids"].shape[1] + max_new_tokens
            bucket = -(-need // STATIC_CACHE_BUCKET) * STATIC_CACHE_BUCKET
            cache = {"cache_implementation": "static", "max_cache_len": bucket}
        with torch.inference_mode():
            out = self.model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                min_new_tokens=min_new_tokens,
                do_sample=False,
                **cache,
            )
        new_tokens = out[:, inputs["input_ids"].shape[1] :]
        return self.processor.batch_decode(new_tokens, skip_special_tokens=True)

    def generate(
        self,
        images: Sequence,
        prompts: Sequence[str],
        max_new_tokens: int = 64,
        min_new_tokens: int = 0,
        batch_size: int = 8,
    ) -> list[str]:
        if len(images) != len(prompts):
            raise ValueError("one prompt per image")
        answers: list[str] = []
        batches = [
            (list(images[i : i + batch_size]), list(prompts[i : i + batch_size]))
            for i in range(0, len(images), batch_size)
        ]
        # The next batch is prepared on a CPU thread while the GPU generates this one.
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(self._inputs, *batches[0]) if batches else None
            for index, (imgs, texts) in enumerate(batches):
                inputs_future = pending
                if index + 1 < len(batches):
                    pending = pool.submit(self._inputs, *batches[index + 1])
                answers += self._run_batch(
                    imgs, texts, max_new_tokens, min_new_tokens, inputs_future
                )
        return answers

    def _run_batch(self, imgs, texts, max_new_tokens, min_new_tokens, inputs_future) -> list[str]:
        """One batch; if it fails (bad image, out of memory) each item is retried alone and
        an item that still fails gets an empty answer and a recorded failure."""
        try:
            return self._generate_batch(
                imgs, texts, max_new_tokens, min_new_tokens, inputs_future.result()
            )
        except Exception as exc:  # noqa: BLE001 - retried per item, then recorded
            log.warning("VLM batch failed (%s); retrying one by one", exc)
        answers: list[str] = []
        for img, text in zip(imgs, texts, strict=True):
            try:
                answers += self._generate_batch([img], [text], max_new_tokens, min_new_tokens)
            except Exception as item_exc:  # noqa: BLE001
                self.failures.append(f"{type(item_exc).__name__}: {item_exc}")
                answers.append("")
        return answers
