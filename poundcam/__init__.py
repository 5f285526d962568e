"""poundcam: PoundNet real/fake detection with faithful comparative class activation maps."""
from .cam import CAMResult, ComparativeCAM, PoundNetGradCAM
from .errors import CAMError, CheckpointError, PoundcamError, WeightsNotFoundError
from .transform import preprocess
from .model import PoundNet, PoundNetConfig

__all__ = ["CAMError", "CAMResult", "ComparativeCAM", "PoundNetGradCAM", "CheckpointError", "PoundNet", "PoundNetConfig", "PoundcamError",
           "WeightsNotFoundError", "preprocess"]
__version__ = "0.1.0"
