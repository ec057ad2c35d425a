"""Model checkpoints: srkd's self-describing safetensors format, and conversion of official weights.

``load_model``/``save_model``/``read_metadata`` never unpickle anything. Pickled official checkpoints are read
only by :func:`srkd.checkpoint.convert.convert` (``srkd convert``), through a restricted unpickler.
"""

from srkd.checkpoint.io import load_model, load_state_dict_strict, read_metadata, require_file, save_model

__all__ = ["load_model", "load_state_dict_strict", "read_metadata", "require_file", "save_model"]
