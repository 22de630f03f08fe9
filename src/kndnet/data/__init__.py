"""Data: layouts -> validated manifest -> lesion-grouped splits -> fast datasets."""

from kndnet.data.manifest import load_manifest, prepare
from kndnet.data.synth import write_synthetic

__all__ = ["load_manifest", "prepare", "write_synthetic"]
