"""Training data: the FluxFill CSV, image/mask geometry, the feature cache and the data order.

Prompts repeat heavily in lane datasets and the VAE and T5 cost as much memory as the
transformer, so every row is encoded once before training (VAE posterior of the image and
of the masked image, the binarized mask, CLIP pooled + T5 embeddings per unique prompt
pair) into a content-keyed cache on local disk; then the encoders are released. The cache
survives a resumed run on the same machine, and processes of one node share it
(``lanepaint.training.cache``: each entry carries its checksum).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import posixpath
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lanepaint.data import fluxfill
from lanepaint.data.fluxfill import FluxFillRow, Rejection
from lanepaint.io import storage
from lanepaint.io.atomic import atomic_write_text
from lanepaint.io.images import to_8bit
from lanepaint.training.cache import FeatureCache

log = logging.getLogger(__name__)

MULTIPLE = 16  # FluxFill needs height and width divisible by 16 (VAE 8 x packing 2)
LATENT_KEYS = ("latent_mean", "latent_std", "masked_mean", "masked_std")
CACHE_FORMAT = 2  # part of every key: a layout change never reads old entries


# --------------------------------------------------------------------------- dataset


@dataclass(frozen=True)
class TrainData:
    """A parsed FluxFill CSV: where its files are (``local_root``) and what it contains."""

    uri: str
    csv_sha256: str
    rows: list[FluxFillRow]
    rejections: list[Rejection]
    local_root: Path | None = None


def split_train_data(train_data: str) -> tuple[str, str]:
    """``CSV_OR_DIR`` -> (dataset root, CSV URI); paths in the CSV are relative to the root."""
    if train_data.rstrip("/").lower().endswith(".csv"):
        csv_uri = train_data.rstrip("/")
        if storage.is_gcs(csv_uri):
            bucket, key = storage.split_gcs(csv_uri)
            return f"gs://{bucket}/{posixpath.dirname(key)}", csv_uri
        return os.path.dirname(os.path.abspath(csv_uri)), csv_uri
    return train_data, storage.join(train_data, fluxfill.CSV_NAME)


def read_train_data(train_data: str) -> TrainData:
    """Parse the CSV (local or gs://); whole-file problems raise DatasetFormatError."""
    root, csv_uri = split_train_data(train_data)
    try:
        raw = storage.read_bytes(csv_uri)
    except FileNotFoundError as exc:
        raise fluxfill.DatasetFormatError(f"no training CSV at {csv_uri}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise fluxfill.DatasetFormatError(f"{csv_uri} is not UTF-8 text: {exc}") from exc
    rows, rejections = fluxfill.parse_csv(text, csv_uri)
    return TrainData(root, hashlib.sha256(raw).hexdigest(), rows, rejections)


def fetch_dataset(data: TrainData, cache_root: Path, workers: int = 8) -> Path:
    """A local folder holding the files of ``data`` (gs:// is downloaded once per machine).

    Keyed by the CSV's SHA-256, so a dataset republished at the same URI is fetched anew.
    A file that cannot be downloaded stays missing and is reported per row later.
    """
    if not storage.is_gcs(data.uri):
        return Path(data.uri)
    dest = cache_root / f"dataset-{data.csv_sha256[:16]}"
    marker = dest / ".lanepaint-complete"
    if marker.is_file():
        return dest
    wanted = sorted({rel for row in data.rows for rel in (row.image, row.mask)})

    def fetch(rel: str) -> None:
        target = dest / rel
        if target.is_file():
            return
        try:
            storage.download_file(storage.join(data.uri, rel), target)
        except FileNotFoundError:
            pass

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(fetch, wanted))
    atomic_write_text(marker, data.uri + "\n")
    return dest


# --------------------------------------------------------------------------- geometry


def target_size(width: int, height: int, resolution: int) -> tuple[int, int]:
    """Training size: about ``resolution**2`` pixels, source aspect kept, sides % 16 == 0."""
    scale = resolution / math.sqrt(width * height)
    tw = max(MULTIPLE, int(width * scale) // MULTIPLE * MULTIPLE)
    th = max(MULTIPLE, int(height * scale) // MULTIPLE * MULTIPLE)
    return tw, th


def _resize_cover_crop(im: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Resize so that ``size`` is covered, then center-crop to it (same box for any input)."""
    tw, th = size
    w, h = im.size
    s = max(tw / w, th / h)
    rw, rh = max(tw, math.ceil(w * s - 1e-6)), max(th, math.ceil(h * s - 1e-6))
    im = im.resize((rw, rh), Image.Resampling.LANCZOS)
    left, top = (rw - tw) // 2, (rh - th) // 2
    return im.crop((left, top, left + tw, top + th))


def load_pair(
    image_bytes: bytes, mask_bytes: bytes, resolution: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Image (3,H,W) in [-1,1] and binary mask (1,H,W), resized and cropped identically.

    The mask goes through the same resampling as the image and is then binarized at 0.5,
    as FluxFillPipeline's mask processor does, so both stay aligned pixel for pixel.
    """
    with Image.open(io.BytesIO(image_bytes)) as im:
        image = to_8bit(im).convert("RGB")
    with Image.open(io.BytesIO(mask_bytes)) as im:
        mask = im.convert("L")
    if image.size != mask.size:
        raise ValueError(f"size mismatch: image {image.size} != mask {mask.size}")
    size = target_size(*image.size, resolution)
    img = np.asarray(_resize_cover_crop(image, size), dtype=np.float32)
    msk = np.asarray(_resize_cover_crop(mask, size), dtype=np.float32) / 255.0
    img_t = torch.from_numpy(img).permute(2, 0, 1) / 127.5 - 1.0
    mask_t = torch.from_numpy((msk >= 0.5).astype(np.float32))[None]
    return img_t, mask_t


# --------------------------------------------------------------------------- keys


def component_id(folders: Iterable[Path], extra: object = None) -> str:
    """Identity of model components: their JSON configs' bytes and weight files' stats."""
    h = hashlib.sha256(json.dumps(extra, sort_keys=True, default=str).encode())
    for folder in folders:
        for path in sorted(Path(folder).glob("*")):
            if path.suffix == ".json" or path.name.endswith((".txt", ".model")):
                h.update(path.name.encode() + path.read_bytes())
            elif path.suffix == ".safetensors":
                st = path.stat()
                h.update(f"{path.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def text_key(prompt: str, prompt_2: str, max_sequence_length: int, text_id: str) -> str:
    """``prompt`` feeds CLIP, ``prompt_2`` (or ``prompt`` when empty) feeds T5."""
    payload = json.dumps([CACHE_FORMAT, prompt, prompt_2 or prompt, max_sequence_length, text_id])
    return hashlib.sha256(payload.encode()).hexdigest()


def latent_key(image_sha: str, mask_sha: str, resolution: int, vae_id: str) -> str:
    payload = f"{CACHE_FORMAT}:{image_sha}:{mask_sha}:{resolution}:{vae_id}"
    return hashlib.sha256(payload.encode()).hexdigest()


# --------------------------------------------------------------------------- cache


def encode_text(
    pipe, prompts: Sequence[str], prompts_2: Sequence[str], max_sequence_length: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(T5 embeddings (B,L,D), CLIP pooled (B,D)) through the stock ``encode_prompt``."""
    with torch.no_grad():
        embeds, pooled, _ = pipe.encode_prompt(
            prompt=list(prompts),
            prompt_2=[p2 or p for p, p2 in zip(prompts, prompts_2, strict=True)],
            device=pipe.text_encoder.device,
            max_sequence_length=max_sequence_length,
        )
    return embeds, pooled


def encode_images(vae, images: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
    """VAE posteriors (mean, std) of images and of the masked images, as FluxFill builds them.

    ``images`` (B,3,H,W) in [-1,1], ``masks`` (B,1,H,W) binary; masked = image * (1 - mask),
    exactly the pipeline's ``init_image * (1 - mask_image)``. Samples are drawn per step.
    """
    param = next(vae.parameters())
    x = torch.cat([images, images * (1 - masks)]).to(param.device, param.dtype)
    with torch.no_grad():
        dist = vae.encode(x).latent_dist
    b = images.shape[0]
    return {
        "latent_mean": dist.mean[:b],
        "latent_std": dist.std[:b],
        "masked_mean": dist.mean[b:],
        "masked_std": dist.std[b:],
    }


@dataclass
class CacheEntry:
    """One CSV row after caching: its latent key, or why it cannot be used."""

    line: int
    image: str
    latent_key: str | None
    text_key: str
    reason: str | None = None


def build_text_cache(
    pipe,
    cache: FeatureCache,
    pairs: Sequence[tuple[str, str]],
    text_id: str,
    max_sequence_length: int,
    batch: int = 16,
) -> int:
    """Encode the prompt pairs not yet cached; returns how many were encoded."""
    todo = []
    for p, p2 in pairs:
        key = text_key(p, p2, max_sequence_length, text_id)
        if not cache.has_text(key):
            todo.append((key, p, p2))
    for i in range(0, len(todo), batch):
        chunk = todo[i : i + batch]
        embeds, pooled = encode_text(
            pipe, [c[1] for c in chunk], [c[2] for c in chunk], max_sequence_length
        )
        for j, (key, _, _) in enumerate(chunk):
            cache.put("text", key, {"prompt_embeds": embeds[j], "pooled": pooled[j]})
    return len(todo)


def build_latent_cache(
    vae,
    cache: FeatureCache,
    rows: Sequence[FluxFillRow],
    local_root: Path,
    resolution: int,
    vae_id: str,
    text_key_of: Callable[[FluxFillRow], str],
    workers: int = 8,
    batch: int = 4,
) -> list[CacheEntry]:
    """Validate, load and VAE-encode ``rows``; a bad row becomes an entry with a reason.

    Rows are checked with the dataset's own ``check_row`` (files inside the dataset, symlinks
    resolved; they exist and decode, sizes match, mask not empty, caption well formed)
    before anything is encoded.
    """

    roots = fluxfill.link_roots(local_root)

    def prepare(row: FluxFillRow):
        problem = fluxfill.check_row(local_root, row, roots)
        if problem:
            return row, None, problem, None
        try:
            # Read through the resolved paths that check_row found inside the dataset.
            image_bytes = fluxfill.resolve_inside(local_root, row.image, roots).read_bytes()
            mask_bytes = fluxfill.resolve_inside(local_root, row.mask, roots).read_bytes()
            key = latent_key(
                hashlib.sha256(image_bytes).hexdigest(),
                hashlib.sha256(mask_bytes).hexdigest(),
                resolution,
                vae_id,
            )
            if cache.has_latents(key):
                return row, key, None, None
            return row, key, None, load_pair(image_bytes, mask_bytes, resolution)
        except Exception as exc:  # PIL and file errors come in many types
            return row, None, f"unreadable row: {type(exc).__name__}: {exc}", None

    entries: list[CacheEntry] = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for start in range(0, len(rows), batch):
            prepared = list(pool.map(prepare, rows[start : start + batch]))
            todo: dict[tuple[int, ...], list] = {}
            for row, key, reason, pair in prepared:
                entries.append(CacheEntry(row.line, row.image, key, text_key_of(row), reason))
                if pair is not None:
                    todo.setdefault(tuple(pair[0].shape), []).append((entries[-1], key, pair))
            for group in todo.values():
                images = torch.stack([g[2][0] for g in group])
                masks = torch.stack([g[2][1] for g in group])
                try:
                    latents = encode_images(vae, images, masks)
                except Exception as exc:  # an encoder failure must name its rows
                    for entry, _, _ in group:
                        entry.latent_key = None
                        entry.reason = f"encode failed: {type(exc).__name__}: {exc}"
                    continue
                for j, (_, key, (_, mask)) in enumerate(group):
                    tensors = {k: latents[k][j] for k in LATENT_KEYS}
                    # 1 bit per pixel: at 1024^2 the mask would otherwise outweigh the latents
                    bits = np.packbits(mask[0].numpy().astype(np.uint8).ravel())
                    tensors["mask_bits"] = torch.from_numpy(bits)
                    tensors["mask_hw"] = torch.tensor(mask.shape[-2:])
                    cache.put("latents", key, tensors)
    return entries


# --------------------------------------------------------------------------- order


class SampleOrder:
    """The global sample stream: epoch ``e`` is a permutation seeded by (seed, e).

    Position ``g`` of the stream is a pure function of (seed, number of rows, g), so the
    data position of a checkpoint is one integer (samples seen) and a resumed run reads
    exactly the rows the uninterrupted run would have read.
    """

    def __init__(self, n: int, seed: int):
        if n < 1:
            raise ValueError("no rows to train on")
        self.n = n
        self.seed = seed
        self._perms: OrderedDict[int, torch.Tensor] = OrderedDict()

    def _perm(self, epoch: int) -> torch.Tensor:
        perm = self._perms.get(epoch)
        if perm is None:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            perm = torch.randperm(self.n, generator=gen)
            self._perms[epoch] = perm
            if len(self._perms) > 2:
                self._perms.popitem(last=False)
        return perm

    def __getitem__(self, g: int) -> int:
        return int(self._perm(g // self.n)[g % self.n])


def micro_batch_positions(
    samples_seen: int, micro: int, process: int, processes: int, batch_size: int
) -> list[int]:
    """Stream positions read by ``process`` in micro-step ``micro`` of the current step."""
    start = samples_seen + (micro * processes + process) * batch_size
    return list(range(start, start + batch_size))
