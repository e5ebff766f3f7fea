"""The view geometry (lanepaint.edit.geometry) and full-resolution compositing
(lanepaint.edit.composite), without models: shapes keep their proportions, padding never
enters a mask, every source size maps, and the background is the source's bit for bit."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from lanepaint.edit.composite import Repaint, composite_video, view_inputs
from lanepaint.edit.geometry import MODES, Geometry, bounding_box, make_geometry, paint_box

VIEW = (480, 720)


def circle(size: tuple[int, int], center: tuple[int, int], radius: int) -> np.ndarray:
    image = np.zeros((*size, 3), np.uint8)
    cv2.circle(image, center[::-1], radius, (255, 255, 255), -1, cv2.LINE_AA)
    return image


def aspect(image: np.ndarray) -> float:
    """Width / height of a bright blob, from its second moments (sub-pixel exact)."""
    m = cv2.moments(image[..., 0].astype(np.float32))
    return float(np.sqrt(m["mu20"] / m["mu02"]))


def road(size: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(size, np.uint8)
    h, w = size
    pts = np.array([[w // 3, h // 2], [2 * w // 3, h // 2], [w - 1, h - 1], [0, h - 1]])
    cv2.fillPoly(mask, [pts.astype(np.int32)], 1)
    return mask


@pytest.mark.parametrize("mode", ["fit", "crop"])
def test_a_circle_stays_a_circle_through_the_round_trip(mode):
    source = (1080, 1920)
    image = circle(source, (700, 900), 200)
    region = (image[..., 0] > 0).astype(np.uint8)
    geometry = make_geometry(mode, source, VIEW, region[None])
    assert geometry.aspect_error < 0.01
    view = geometry.to_view(image)
    assert view.shape == (*VIEW, 3)
    assert abs(aspect(view) - 1) < 0.01, f"{mode}: circle in the view has aspect {aspect(view)}"
    back = np.zeros_like(image)
    t, lf, b, r = geometry.crop
    back[t:b, lf:r] = geometry.from_view(view)
    assert abs(aspect(back) - 1) < 0.01
    assert bounding_box(back > 127) == pytest.approx(bounding_box(image > 127), abs=3)


def test_stretch_is_the_official_behaviour_and_distorts_16_9():
    geometry = make_geometry("stretch", (1080, 1920), VIEW)
    assert geometry.placed == (0, 0, *VIEW) and not geometry.padding
    view = geometry.to_view(circle((1080, 1920), (540, 960), 300))
    assert aspect(view) == pytest.approx(1.5 / (16 / 9), abs=0.01)  # squashed by 16 %
    assert geometry.aspect_error > 0.15


def test_fit_pads_and_padding_never_enters_a_mask():
    geometry = make_geometry("fit", (1080, 1920), VIEW)
    assert geometry.placed == (37, 0, 442, 720)  # 405 rows of picture, letterboxed
    everything = geometry.mask_to_view(np.ones((1080, 1920), np.uint8))
    assert everything[37:442].all() and not everything[:37].any() and not everything[442:].any()
    # A thin mask never vanishes in the view (a view pixel is masked if any source pixel is).
    line = np.zeros((1080, 1920), np.uint8)
    line[700, 100:1800] = 1
    assert geometry.mask_to_view(line).sum() >= 1700 * 0.375 - 2


def test_crop_holds_the_road_and_does_not_upsample():
    source = (1080, 1920)
    small = np.zeros(source, np.uint8)
    small[800:900, 1000:1200] = 1  # a road patch smaller than the view
    g = make_geometry("crop", source, VIEW, small[None])
    t, lf, b, r = g.crop
    assert (b - t, r - lf) == VIEW and t <= 800 and b >= 900 and lf <= 1000 and r >= 1200
    assert g.scale == (1.0, 1.0) and not g.padding
    wide = make_geometry("crop", source, VIEW, road(source)[None])  # the usual road: full width
    assert wide.crop[1] == 0 and wide.crop[3] == 1920 and wide.aspect_error < 0.01
    assert wide.crop[0] <= 540 and wide.crop[2] == 1080
    with pytest.raises(ValueError, match="road region"):
        make_geometry("crop", source, VIEW, np.zeros((1, *source), np.uint8))


@pytest.mark.parametrize(
    "source", [(1920, 1080), (541, 961), (120, 200), (16, 16), (480, 720)], ids=str
)
@pytest.mark.parametrize("mode", MODES)
def test_every_source_size_maps_and_back(source, mode):
    """Portrait, odd-sized, smaller than the model, tiny, and the model's own size."""
    frame = np.random.default_rng(0).integers(0, 255, (*source, 3), dtype=np.uint8)
    g = make_geometry(mode, source, VIEW, road(source)[None])
    assert g.to_view(frame).shape == (*VIEW, 3)
    t, lf, b, r = g.crop
    assert g.from_view(g.to_view(frame)).shape == (b - t, r - lf, 3)
    if mode != "stretch":
        assert g.aspect_error < 0.01 + 1 / min(b - t, r - lf)
    assert Geometry.from_dict(g.as_dict()) == g
    if source == VIEW:
        assert g.crop == (0, 0, *VIEW) and np.array_equal(g.to_view(frame), frame)


def test_too_small_a_source_is_refused_clearly():
    with pytest.raises(ValueError, match="at least 16 pixels"):
        make_geometry("fit", (8, 40), VIEW)
    with pytest.raises(ValueError, match="fit, crop, stretch"):
        make_geometry("squash", (480, 720), VIEW)


def test_paint_box_is_a_crop_at_about_the_native_pixel_count():
    mask = np.zeros((1080, 1920), np.uint8)
    mask[600:1000, 300:1500] = 1
    box = paint_box(mask, 1024)
    t, lf, b, r = box.crop
    assert t <= 600 and b >= 1000 and lf <= 300 and r >= 1500  # the mask and some context
    assert all(s % 16 == 0 for s in box.work)
    assert box.work[0] * box.work[1] == pytest.approx(1024 * 1024, rel=0.05)
    assert (b - t) / (r - lf) == pytest.approx(box.work[0] / box.work[1], rel=0.03)
    tiny = np.zeros((1080, 1920), np.uint8)
    tiny[500:520, 900:940] = 1  # small mask: context grows to the working area, no upsampling
    t, lf, b, r = paint_box(tiny, 1024).crop
    assert (b - t) * (r - lf) == pytest.approx(1024 * 1024, rel=0.05)


def test_composite_keeps_every_background_pixel_exactly():
    """The lossless path: before encoding, outside the repaint region the edit is the
    source bit for bit, and inside it the model's pixels arrive."""
    rng = np.random.default_rng(1)
    source = (3, 270, 480)
    frames = rng.integers(0, 255, (*source, 3), dtype=np.uint8)
    masks = np.stack([road(source[1:])] * 3)
    first = frames[0].copy()
    first[masks[0] > 0] = 0
    repaint = Repaint.for_rows(16, 8, source[1])
    view = view_inputs("fit", (96, 144), frames, masks, first, repaint)
    assert view.frames.shape == (3, 96, 144, 3) and view.masks.shape == (3, 96, 144)
    generated = np.full_like(view.frames, 255)  # what the model painted, everywhere
    out = composite_video(frames, generated, masks, first, view.geometry, repaint)
    assert out.shape == frames.shape and np.array_equal(out[0], first)
    for t in range(1, 3):
        keep = view.regions[t] == 0
        assert np.array_equal(out[t][keep], frames[t][keep])
        assert (out[t][masks[t] > 0] == 255).all()  # inside the road: the model's pixels
        assert not (view.regions[t] & ~(repaint.weight(masks[t]) > 0)).any()


def test_a_video_under_16_pixels_is_refused_before_any_model(tmp_path):
    """load_item (what both phases of the edit read) refuses it with the reason; an odd
    size that the encoder padded to even is cut back to its masks' size."""
    from lanepaint.data.videopainter import VideoPainterLayout, VideoRecord
    from lanepaint.edit.inputs import load_item
    from lanepaint.io.video import write_video

    layout = VideoPainterLayout(str(tmp_path))
    records = []
    for video_id, (h, w) in {"tiny": (8, 40), "odd": (33, 47)}.items():
        frames = np.full((2, h, w, 3), 100, np.uint8)
        path = Path(layout.raw_video("g", video_id))
        path.parent.mkdir(parents=True, exist_ok=True)
        write_video(path, frames, 8.0)  # yuv420p: the odd one becomes 34x48
        layout.write_masks(video_id, np.ones((2, h, w), np.uint8) * (np.arange(w) < w // 2))
        rel = layout.raw_video_rel("g", video_id)
        records.append(VideoRecord(video_id, rel, video_id, 8.0, 2, w, h, 0, 1))
    layout.write_meta(records)
    by_id = {r.video_id: r for r in layout.read_meta()}
    tiny, odd = by_id["tiny"], by_id["odd"]
    with pytest.raises(ValueError, match="40x8: both sides must be at least 16 pixels"):
        load_item(layout, tiny)
    frames, masks = load_item(layout, odd)
    assert frames.shape == (2, 33, 47, 3) and masks.shape == (2, 33, 47)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("source", [(270, 480), (1080, 1920), (96, 64), (24, 40)], ids=str)
def test_the_pipelines_dilation_covers_the_composited_region(mode, source):
    """The view gets the undilated road masks (as the propagation modes expect) and a
    dilation whose growth holds every pixel the composite blends in: the model generates
    all of them."""
    import torch

    from lanepaint.videopainter.windows import dilate_masks

    frames = np.zeros((2, *source, 3), np.uint8)
    masks = np.stack([road(source), np.roll(road(source), source[1] // 5, axis=1)])
    repaint = Repaint.for_rows(16, 8, source[0])
    view = view_inputs(
        mode, (32, 48) if source[0] < 100 else VIEW, frames, masks, frames[0], repaint
    )
    grown = dilate_masks(torch.as_tensor(view.masks), view.dilation).numpy()
    mapped = np.stack([view.geometry.mask_to_view(r) for r in view.regions]) > 0
    assert mapped.any() and not (mapped & ~grown).any()
    assert not (view.masks & ~mapped).any()  # the road itself lies inside the region
