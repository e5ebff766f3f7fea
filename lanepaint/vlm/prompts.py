"""The prompts we send to the VLM. Both ask for JSON; lanepaint.vlm.parse reads the answers."""

CAPTION_PROMPT = (
    "This is a front-camera image from a car driving on a road. Look at the painted lane "
    "markings on the left and right of the lane the camera car drives in. Answer with JSON "
    'only, no other text: {"count": "single" or "double", "color": "white", "yellow" or '
    '"mixed", "pattern": "solid", "dashed" or "mixed"}. Use "mixed" when the left and '
    'right markings differ, and "unknown" for anything you cannot see.'
)

JUDGE_PROMPT = (
    "The image has three panels side by side: LEFT the original road frame, MIDDLE the mask "
    "(white = the region that was repainted), RIGHT the repainted result. The requested lane "
    'markings are: "{caption}". Judge only the RIGHT panel inside the white region: does it '
    "show exactly the requested lane markings (count, color and dash pattern), painted "
    "realistically on asphalt in the road's perspective, blending with the unchanged "
    "surroundings? Answer with JSON only, no other text: "
    '{{"verdict": "PASS" or "FAIL", "reasons": ["short reason", ...], '
    '"revised_caption": "if FAIL, a better one-sentence prompt for the painter, else empty"}}'
)


def judge_prompt(caption: str) -> str:
    return JUDGE_PROMPT.format(caption=caption.replace('"', "'"))
