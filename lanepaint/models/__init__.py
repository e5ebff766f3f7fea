"""Model weights: the model root, loaders, the smoke set, placement on GPUs.

Stages call ``lanepaint.models.loaders`` (load_flux_fill, load_cogvideox_i2v, load_qwen_vl,
load_sam2_video_predictor) and put ``ModelRoot.metadata()`` into their outputs. The heavy
modules import torch; this package and ``root`` do not, so the CLI stays fast.
"""

from lanepaint.models.root import ModelError, ModelRoot, as_model_root, model_set_label

__all__ = ["ModelError", "ModelRoot", "as_model_root", "model_set_label"]
