"""TFDS builders for organ-mask datasets and the synthetic demo data."""

from mask_hybridgnet_jax.datasets.common import SPLITS
from mask_hybridgnet_jax.datasets.common import dataset_metadata
from mask_hybridgnet_jax.datasets.common import load_builder
from mask_hybridgnet_jax.datasets.common import prepare
from mask_hybridgnet_jax.datasets.common import read_split
from mask_hybridgnet_jax.datasets.registry import list_datasets
from mask_hybridgnet_jax.datasets.synthetic import write_synthetic_dataset
