"""KNDNet: distil a large skin-lesion classifier into a ~149K-parameter CNN for phones and MCUs.

Implements and extends Lishad et al. (2025), "KNDNet": confidence-masked knowledge distillation from
an EfficientNet teacher into a depthwise-separable student on HAM10000 (Tschandl et al., 2018).
"""

from kndnet.classes import CLASS_CODES, CLASS_NAMES, CLASSES, NUM_CLASSES
from kndnet.config import Config, load_config

__version__ = "0.1.0"

__all__ = ["CLASSES", "CLASS_CODES", "CLASS_NAMES", "NUM_CLASSES", "Config", "load_config",
           "__version__"]
