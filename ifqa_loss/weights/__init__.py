"""The one place that touches weight files: reading (safely), verifying, the cache, building and saving networks.

Example:
    >>> from ifqa_loss.weights import cache_dir, installed
    >>> sorted(row["metric"] for row in installed())
    ['gfiqa', 'gfiqa-resnet50', 'ifqa', 'ifqa++']
"""
from .cache import MANIFEST, cache_dir, find_checkpoint, import_checkpoint, installed, read_manifest, recorded_sha256
from .load import load_network, random_network, resolve_metric, save_checkpoint
from .read import (
    Checkpoint,
    CheckpointError,
    check_sha256,
    check_tensors,
    read_checkpoint,
    read_state_dict,
    read_training_state,
    sha256_file,
    stylegan_prior_state_dict,
)
from .verify import StateDictReport, check_state_dict, expected_shapes, identify, meta_network, validate_config

__all__ = [
    "MANIFEST", "Checkpoint", "CheckpointError", "StateDictReport", "cache_dir", "check_state_dict",
    "expected_shapes", "find_checkpoint", "identify", "import_checkpoint", "installed", "load_network",
    "random_network", "read_checkpoint", "read_manifest", "read_state_dict", "read_training_state",
    "resolve_metric", "save_checkpoint", "sha256_file", "stylegan_prior_state_dict", "check_sha256", "check_tensors",
    "meta_network", "recorded_sha256", "validate_config",
]
