"""Names of the dataset builders, as used in configs and on the command line."""

from __future__ import annotations

from mask_hybridgnet_jax.datasets import common
from mask_hybridgnet_jax.datasets import folder
from mask_hybridgnet_jax.datasets import hc18
from mask_hybridgnet_jax.datasets import jsrt_contours
from mask_hybridgnet_jax.datasets import montgomery
from mask_hybridgnet_jax.datasets import psfhs
from mask_hybridgnet_jax.datasets import sunnybrook

BUILDERS: dict[str, type[common.MaskDatasetBuilder]] = {
    folder.MaskFolder.name: folder.MaskFolder,
    montgomery.Montgomery.name: montgomery.Montgomery,
    hc18.HC18.name: hc18.HC18,
    jsrt_contours.JsrtContours.name: jsrt_contours.JsrtContours,
    psfhs.Psfhs.name: psfhs.Psfhs,
    sunnybrook.Sunnybrook.name: sunnybrook.Sunnybrook,
}


def list_datasets() -> list[str]:
  """Return the sorted names accepted by `common.load_builder`."""
  return sorted(BUILDERS)
