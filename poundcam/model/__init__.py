from .checkpoint import convert, export_safetensors, load_poundnet, model_id
from .config import PoundNetConfig
from .poundnet import PoundNet

__all__ = ["PoundNet", "PoundNetConfig", "convert", "export_safetensors", "load_poundnet", "model_id"]
