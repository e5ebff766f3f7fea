"""``lanepaint models import``: a model root assembled from Hugging Face downloads.

The public repositories are downloaded with ``hf download`` (into the hub cache, or each
into ``--local-dir DIR/<name>``). The importer finds each repository's files, lays them out
as the model root (:mod:`lanepaint.models.root`) by symlinks or hardlinks, so that no weight
file is copied unless asked, adds what the loaders need and the repositories lack, and ends
with the same check as ``lanepaint models check``.

Everything is planned and validated before the root is touched: a missing download is one
line naming the repositories and their download commands. Each model folder is built beside
its place and renamed into it, so an interrupted import leaves no half-linked folder.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from lanepaint.models.files import PICKLE_SUFFIXES, read_json
from lanepaint.models.root import (
    COGVIDEOX_I2V_DIR,
    FLUX_FILL_DIR,
    QWEN_VL_DIRS,
    SAM2_CHECKPOINT,
    SAM2_SIDECAR,
    SMOKE_MARKER,
    VIDEOPAINTER_BRANCH_DIR,
    VIDEOPAINTER_ID_LORA_FILE,
    ModelError,
)

log = logging.getLogger(__name__)

LINK_MODES = ("symlink", "hardlink", "copy")
# Text samples on which a borrowed T5 tokenizer.json must tokenize like the spiece.model.
# Single spaces only: around extra whitespace the fast and slow T5 tokenizers differ by design.
T5_SAMPLES = (
    "Replace the dashed white lane marking with a solid double yellow line.",
    "Digits 0123456789 and (punctuation): [a] {b} -_/|+=*&%#@<>?!",
    "A wet road at night; lane lines are faded near the 3rd exit.",
)


@dataclass(frozen=True)
class Part:
    """A file or folder of a repository (``src``, "" for all of it) and its place in the
    root (``dest``). ``pipeline`` folders link only model_index.json, the components it
    names and the licence/readme, not single-file weights beside them."""

    src: str
    dest: str
    required: bool = True
    pipeline: bool = False


@dataclass(frozen=True)
class Source:
    """One public repository: where its parts go, and how to download them."""

    name: str
    repos: tuple[str, ...]  # the first is the one to download; others are its old names
    parts: tuple[Part, ...]
    required: bool
    specs: tuple[str, ...]  # the registry slots its parts fill (what the check covers)
    download_args: str = ""

    @property
    def folder_name(self) -> str:
        return self.repos[0].split("/", 1)[1]

    def download_command(self, local_dir: Path | None = None) -> str:
        words = ["hf download", self.repos[0], self.download_args]
        if local_dir is not None:
            words.append(f"--local-dir {local_dir / self.folder_name}")
        return " ".join(w for w in words if w)


SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source(
            "flux_fill",
            ("black-forest-labs/FLUX.1-Fill-dev",),
            (Part("", FLUX_FILL_DIR, pipeline=True),),
            True,
            ("flux_fill",),
            "--exclude flux1-fill-dev.safetensors --exclude ae.safetensors",
        ),
        Source(
            "cogvideox_i2v",
            ("THUDM/CogVideoX-5b-I2V", "zai-org/CogVideoX-5b-I2V"),
            (Part("", COGVIDEOX_I2V_DIR, pipeline=True),),
            True,
            ("cogvideox_i2v",),
        ),
        Source(
            "videopainter",
            ("TencentARC/VideoPainter",),
            (
                Part("VideoPainter/checkpoints/branch", VIDEOPAINTER_BRANCH_DIR),
                Part(
                    "VideoPainterID/checkpoints/pytorch_lora_weights.safetensors",
                    VIDEOPAINTER_ID_LORA_FILE,
                    required=False,
                ),
            ),
            True,
            ("videopainter_branch", "videopainter_id_lora"),
            '--include "VideoPainter/checkpoints/branch/*" '
            '--include "VideoPainterID/checkpoints/pytorch_lora_weights.safetensors"',
        ),
        Source(
            "qwen_vl_7b",
            ("Qwen/Qwen2.5-VL-7B-Instruct",),
            (Part("", QWEN_VL_DIRS["7B"]),),
            True,
            ("qwen_vl_7b",),
        ),
        Source(
            "qwen_vl_72b",
            ("Qwen/Qwen2.5-VL-72B-Instruct",),
            (Part("", QWEN_VL_DIRS["72B"]),),
            False,
            ("qwen_vl_72b",),
        ),
        Source(
            "sam2",
            ("facebook/sam2.1-hiera-large",),
            # The sidecar is never in the hub repository; a download that has one (the
            # smoke set laid out as a cache) needs it to load.
            (Part(SAM2_CHECKPOINT, SAM2_CHECKPOINT), Part(SAM2_SIDECAR, SAM2_SIDECAR, False)),
            True,
            ("sam2",),
            SAM2_CHECKPOINT,
        ),
    )
}


@dataclass
class Slot:
    """One part as it will be written: root-relative destination -> file in a download."""

    source: Source
    part: Part
    origin: Path
    files: dict[str, Path] = field(default_factory=dict)
    action: str = "linked"  # linked | kept (exists; --overwrite replaces it)


class MissingDownloads(ValueError):
    """Required repositories (or parts of them) are not downloaded; one line."""


# ------------------------------------------------------------------------ finding downloads


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, resolved as huggingface_hub does (HF_HUB_CACHE, then
    HF_HOME/hub, then ~/.cache/huggingface/hub)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    home = os.environ.get("HF_HOME") or os.path.join(xdg, "huggingface")
    return Path(home).expanduser() / "hub"


def cache_snapshot(cache: Path, repo: str) -> Path | None:
    """The snapshot ``refs/main`` points at in the hub cache; with no ref (a download by
    commit), the newest snapshot."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    ref = folder / "refs" / "main"
    if ref.is_file():
        snapshot = folder / "snapshots" / ref.read_text().strip()
        return snapshot if snapshot.is_dir() else None
    snapshots = folder / "snapshots"
    found = [p for p in snapshots.iterdir() if p.is_dir()] if snapshots.is_dir() else []
    return max(found, key=lambda p: p.stat().st_mtime, default=None)


def find_download(source: Source, cache: Path, local_dir: Path | None) -> Path | None:
    """``local_dir/<name>`` (``hf download --local-dir``) first, then the hub cache."""
    if local_dir is not None:
        for repo in source.repos:
            candidate = local_dir / repo.split("/", 1)[1]
            if candidate.is_dir():
                return candidate
    for repo in source.repos:
        snapshot = cache_snapshot(cache, repo)
        if snapshot is not None:
            return snapshot
    return None


# ------------------------------------------------------------------------ which files


def _files_under(folder: Path) -> list[Path]:
    """Files of a download, without hub bookkeeping (dot-paths) and without pickled weights
    in a folder that also has safetensors (the loaders read only those)."""
    files = [
        p
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not any(s.startswith(".") for s in p.relative_to(folder).parts)
    ]
    with_safetensors = {p.parent for p in files if p.suffix == ".safetensors"}
    return [p for p in files if not (p.suffix in PICKLE_SUFFIXES and p.parent in with_safetensors)]


def _part_files(source: Source, part: Part, origin: Path) -> dict[str, Path]:
    """Root-relative destination -> source file, for one part found at ``origin``."""
    if origin.is_file():
        return {part.dest: origin}
    files = _files_under(origin)
    if part.pipeline:
        index = read_json(source.name, origin / "model_index.json")
        components = {k for k in index if not k.startswith("_")}
        files = [p for p in files if _in_pipeline(p.relative_to(origin), components)]
    return {f"{part.dest}/{p.relative_to(origin).as_posix()}": p for p in files}


def _in_pipeline(rel: Path, components: set[str]) -> bool:
    """A component's file, model_index.json, or the licence/readme at the top."""
    if len(rel.parts) > 1:
        return rel.parts[0] in components
    return rel.name == "model_index.json" or rel.name.upper().startswith(
        ("LICENSE", "README", "NOTICE")
    )


# ------------------------------------------------------------------------ the plan


def select_sources(only: Iterable[str] = ()) -> list[Source]:
    names = [n.strip() for n in only if n.strip()]
    unknown = sorted(set(names) - set(SOURCES))
    if unknown:
        raise ValueError(
            f"--only: unknown model {', '.join(unknown)} (one of {', '.join(SOURCES)})"
        )
    return [SOURCES[n] for n in names] if names else list(SOURCES.values())


def plan_import(
    root: Path, sources: list[Source], cache: Path, local_dir: Path | None, explicit: bool
) -> list[Slot]:
    """Find every part; a required one that is missing (or any part of a model named with
    ``--only``) is collected into one MissingDownloads naming the download commands."""
    slots: list[Slot] = []
    missing: list[str] = []
    skipped: list[str] = []
    for source in sources:
        required = source.required or explicit
        download = find_download(source, cache, local_dir)
        if download is None:
            if required:
                missing.append(f"{source.repos[0]} ({source.download_command(local_dir)})")
            else:
                skipped.append(f"{source.name} ({source.repos[0]} not downloaded)")
            continue
        for part in source.parts:
            origin = download / part.src if part.src else download
            if origin.exists():
                slots.append(Slot(source, part, origin))
            elif part.required and required:
                missing.append(f"{source.repos[0]}: no {part.src} in {download}")
    if missing:
        places = f"{local_dir}/<name>, then " if local_dir else ""
        raise MissingDownloads(
            f"not downloaded: {'; '.join(missing)} (looked in {places}the hub cache {cache}; "
            "docs/models.md lists the downloads, --only imports a subset)"
        )
    if skipped:
        log.info("optional, skipped: %s", ", ".join(skipped))
    for slot in slots:
        slot.files = _part_files(slot.source, slot.part, slot.origin)
        if (root / slot.part.dest).exists() or (root / slot.part.dest).is_symlink():
            slot.action = "kept"
    return slots


def add_t5_tokenizer_json(root: Path, slots: list[Slot]) -> list[str]:
    """A T5 tokenizer folder with only ``spiece.model`` gets a ``tokenizer.json``, so no
    load has to convert spiece.model (and a root stays loadable where sentencepiece is
    trimmed from an image). It is borrowed from another T5 tokenizer of the import or
    of the root (FLUX.1-Fill-dev/tokenizer_2 for CogVideoX) after checking that it has the
    same vocabulary and tokenizes the samples alike. Returns the destinations it added."""
    new = [s for s in slots if s.action == "linked"]
    planned = {dest: src for s in new for dest, src in s.files.items()}
    candidates = {d: p for d, p in planned.items() if _is_tokenizer_file(d, "tokenizer.json")}
    for existing in (root / d for d in (FLUX_FILL_DIR, COGVIDEOX_I2V_DIR)):
        for path in sorted(existing.glob("tokenizer*/tokenizer.json")):
            candidates.setdefault(path.relative_to(root).as_posix(), path.resolve())
    added = []
    for slot in new:
        for dest, spm in list(slot.files.items()):
            target = dest.rsplit("/", 1)[0] + "/tokenizer.json"
            if not _is_tokenizer_file(dest, "spiece.model") or target in planned:
                continue
            donor = next((d for d, p in candidates.items() if _same_t5(spm, p)), None)
            if donor is None:
                raise ModelError(
                    slot.source.name,
                    root / target.rsplit("/", 1)[0],
                    f"the download has only {spm} and no tokenizer.json of the same T5 "
                    "vocabulary was found to add (import flux_fill too: its tokenizer_2)",
                )
            slot.files[target] = candidates[donor]
            added.append(f"{target} <- {donor}")
    return added


def _is_tokenizer_file(dest: str, name: str) -> bool:
    parts = dest.split("/")
    return len(parts) >= 2 and parts[-1] == name and parts[-2].startswith("tokenizer")


def _same_t5(spm_path: Path, tokenizer_json: Path) -> bool:
    """Same pieces and scores (the json may append <extra_id_N>), same ids on samples."""
    import sentencepiece
    from tokenizers import Tokenizer

    try:
        spm = sentencepiece.SentencePieceProcessor(model_file=str(spm_path))
    except (RuntimeError, OSError) as exc:
        raise ModelError("tokenizer", spm_path, f"not a SentencePiece model: {exc}") from exc
    data = read_json("tokenizer", tokenizer_json)
    model = data.get("model") or {}
    vocab = model.get("vocab") or []
    n = spm.get_piece_size()
    if model.get("type") != "Unigram" or len(vocab) < n:
        return False
    extra = all(str(piece).startswith("<extra_id_") for piece, _ in vocab[n:])
    same = all(
        vocab[i][0] == spm.id_to_piece(i) and abs(vocab[i][1] - spm.get_score(i)) < 1e-4
        for i in range(n)
    )
    if not (extra and same):
        return False
    fast = Tokenizer.from_file(str(tokenizer_json))
    return all(spm.encode(s) == fast.encode(s, add_special_tokens=False).ids for s in T5_SAMPLES)


def verify_sam2(slots: list[Slot]) -> None:
    """The SAM2 checkpoint must load with ``torch.load(weights_only=True)`` (the loader reads
    the .pt itself, so it stays a .pt); checked before anything is linked."""
    from lanepaint.models.loaders import read_sam2_state_dict

    for slot in slots:
        if slot.action == "linked" and slot.part.dest == SAM2_CHECKPOINT:
            read_sam2_state_dict(slot.origin)


# ------------------------------------------------------------------------ writing


def place(src: Path, dest: Path, mode: str) -> None:
    """Symlink (to the download's path, absolute), hardlink (same filesystem) or copy."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if mode == "symlink":
        dest.symlink_to(src.absolute())
    elif mode == "hardlink":
        try:
            os.link(src.resolve(), dest)
        except OSError as exc:
            raise ValueError(
                f"cannot hardlink {src} into {dest.parent} ({exc.strerror}): the model root "
                "must be on the download's filesystem; use symlinks (the default) or --copy"
            ) from exc
    else:
        shutil.copy2(src, dest)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def write_slot(root: Path, slot: Slot, mode: str) -> None:
    """Build the part beside its place, then swap it in (a rename)."""
    dest = root / slot.part.dest
    stage = dest.parent / f".{dest.name}.importing"
    _remove(stage)
    try:
        for rel, src in slot.files.items():
            inner = Path(rel).relative_to(slot.part.dest)
            place(src, stage / inner if inner.parts else stage, mode)
    except BaseException:
        _remove(stage)
        raise
    _remove(dest)
    os.replace(stage, dest)


# ------------------------------------------------------------------------ the command


@dataclass(frozen=True)
class ImportReport:
    slots: list[Slot]
    tokenizers: list[str]
    specs: list[str]  # the registry slots the final check covers


def import_models(
    root: str | os.PathLike[str],
    cache: Path | None = None,
    local_dir: Path | None = None,
    only: Iterable[str] = (),
    mode: str = "symlink",
    overwrite: bool = False,
) -> ImportReport:
    """Plan, validate, then link. Slots already in the root are kept unless ``overwrite``."""
    if mode not in LINK_MODES:
        raise ValueError(f"link mode must be one of {LINK_MODES}, not {mode!r}")
    root = Path(root).expanduser().absolute()
    if (root / SMOKE_MARKER).is_file():
        raise ModelError("model root", root, "is a smoke set; import into another folder")
    if local_dir is not None and not local_dir.is_dir():
        raise FileNotFoundError(f"--local-dir {local_dir} is not a folder")
    only = list(only)
    sources = select_sources(only)
    cache = cache or hub_cache_dir()
    slots = plan_import(root, sources, cache, local_dir, explicit=bool(only))
    if overwrite:
        for slot in slots:
            slot.action = "linked"
    tokenizers = add_t5_tokenizer_json(root, slots)
    verify_sam2(slots)
    root.mkdir(parents=True, exist_ok=True)
    for slot in slots:
        if slot.action == "linked":
            write_slot(root, slot, mode)
        log.debug("%s: %s %d files", slot.part.dest, slot.action, len(slot.files))
    specs = [spec for s in sources for spec in s.specs] if only else []
    return ImportReport(slots, tokenizers, specs)


def format_slots(report: ImportReport, mode: str) -> str:
    verb = {"symlink": "linked", "hardlink": "hardlinked", "copy": "copied"}[mode]
    lines = []
    for slot in report.slots:
        if slot.action == "kept":
            lines.append(f"{slot.part.dest}: kept (already in the root; --overwrite replaces it)")
        else:
            count = f"{len(slot.files)} file" + ("s" if len(slot.files) != 1 else "")
            lines.append(f"{slot.part.dest}: {count} {verb} from {slot.origin}")
    lines += [f"added {entry}" for entry in report.tokenizers]
    return "\n".join(lines)
