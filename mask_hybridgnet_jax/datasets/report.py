"""Plain-text summary of a prepared dataset, as `mask-hybridgnet prepare` prints it."""

from __future__ import annotations

from typing import Any, Mapping

from mask_hybridgnet_jax import topology
from mask_hybridgnet_jax.datasets.common import SPLITS
from mask_hybridgnet_jax.organs import DatasetMetadata

DEFAULT_NUM_LEVELS = 3


def node_counts(
    metadata: DatasetMetadata,
    statistics: Mapping[str, Any],
    scale: float,
    num_levels: int = DEFAULT_NUM_LEVELS,
) -> dict[str, int | None]:
  """Return organ -> full-resolution node count the graph template will use.

  The count follows `topology.nodes_for_organ` from the organ's mean train
  boundary length. It is None for an organ absent from every train example,
  which needs an explicit override.
  """
  lengths = statistics.get("mean_boundary_lengths", {})
  counts: dict[str, int | None] = {}
  for name in metadata.organ_names:
    length = lengths.get(name)
    counts[name] = None if length is None else topology.nodes_for_organ(length, scale, num_levels)
  return counts


def format_report(
    name: str,
    metadata: DatasetMetadata,
    statistics: Mapping[str, Any],
    scale: float | None = None,
    num_levels: int = DEFAULT_NUM_LEVELS,
) -> str:
  """Describe a prepared dataset: organ statistics per split and skipped files.

  Args:
    name: dataset name for the heading.
    metadata: organs in channel order.
    statistics: the statistics returned by `common.dataset_metadata`.
    scale: graph scale factor s (nodes per boundary pixel); None takes the
      builder's default stored at preparation, else 0.1.
    num_levels: graph resolution levels R.

  Returns:
    Multi-line text ending with a newline.
  """
  if scale is None:
    scale = float(statistics.get("graph_scale_factor", 0.1))
  sizes = statistics.get("split_sizes", {})
  presence = statistics.get("presence_counts", {})
  split_lengths = statistics.get("split_mean_boundary_lengths")
  counts = node_counts(metadata, statistics, scale, num_levels)

  lines = [f"{name}: {sum(sizes.values())} examples, input size "
           f"{statistics.get('image_size')} px, points budget {statistics.get('points_budget')}"]
  if not statistics.get("has_images", True):
    lines.append("  no images: the stored images are zeros; train a model that reads masks")
  lines.append(f"  graph nodes per organ at scale {scale:g} and {num_levels} levels "
               "(from mean train boundary length):")
  for organ in metadata.organs:
    count = counts[organ.name]
    text = "no train example, set graph.node_overrides" if count is None else str(count)
    lines.append(f"    {organ.name} (label {organ.label}): {text}")

  width = max(len(organ.name) for organ in metadata.organs)
  for split in SPLITS:
    lines.append(f"  {split}: {sizes.get(split, 0)} examples")
    for organ in metadata.organs:
      present = presence.get(split, {}).get(organ.name, 0)
      if split_lengths is None:
        length_text = "not recorded (dataset prepared by an older version)"
      else:
        length = split_lengths.get(split, {}).get(organ.name)
        length_text = "-" if length is None else f"{length:.1f} px"
      lines.append(f"    {organ.name:<{width}}  present in {present:>4}, "
                   f"mean boundary length {length_text}")

  skipped = statistics.get("skipped", [])
  lines.append(f"  skipped files: {len(skipped)}")
  for entry in skipped:
    lines.append(f"    {entry['file']}: {entry['reason']}")
  degenerate = statistics.get("degenerate_skipped", [])
  if degenerate:
    lines.append(f"  degenerate organs treated as absent: {len(degenerate)}")
    for entry in degenerate:
      lines.append(f"    {entry['id']}: {entry['organ']}")
  return "\n".join(lines) + "\n"
