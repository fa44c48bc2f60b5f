"""Names of the dataset builders, as used in configs and on the command line."""

from __future__ import annotations

from mask_hybridgnet_jax.datasets import common
from mask_hybridgnet_jax.datasets import folder
from mask_hybridgnet_jax.datasets import montgomery

BUILDERS: dict[str, type[common.MaskDatasetBuilder]] = {
    folder.MaskFolder.name: folder.MaskFolder,
    montgomery.Montgomery.name: montgomery.Montgomery,
}


def list_datasets() -> list[str]:
  """Return the sorted names accepted by `common.load_builder`."""
  return sorted(BUILDERS)
