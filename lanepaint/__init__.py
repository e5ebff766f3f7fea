"""lanepaint: lane-marking video editing and lane-marking training data.

The library holds all logic; the CLI (`lanepaint.cli`) and the KFP components call the
stage functions in `lanepaint.stages`. It never imports kfp.
"""

import os

__version__ = "0.1.0"

# MKL (torch's CPU BLAS) picks its thread count by the machine's load unless told not to,
# and a different count sums in a different order: the likely cause of two CPU runs of one
# edit on a busy machine coming out up to 34 levels apart (1 of 6 runs without this setting,
# 0 of 6 with it). Set before torch loads MKL; a value the user exported wins.
os.environ.setdefault("MKL_DYNAMIC", "FALSE")
