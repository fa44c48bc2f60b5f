"""Graph templates: the fixed contour graphs that the decoder predicts.

Each organ is a closed ring of nodes in a fixed order. Organs are concatenated
in metadata order, so every operator is block-diagonal over organs. A template
has `num_levels` resolutions: level 0 is the full graph and level i has
`N / 2**i` nodes per organ.

Worked example for one organ with 8 nodes at level 0 (4 at level 1):

  downsample(0)  coarse i = mean of fine 2i and 2i+1:
    coarse 0 <- fine 0, 1;  coarse 1 <- fine 2, 3;  ...;  coarse 3 <- fine 6, 7
  upsample(0)    fine 2i = coarse i;  fine 2i+1 = mean of coarse i and i+1 mod 4:
    fine 0 <- coarse 0;  fine 1 <- coarse 0, 1;  ...;  fine 7 <- coarse 3, 0

The template is data: it is built once per dataset from the mean boundary
lengths, saved next to the dataset and every checkpoint, and compared on
restore with `differences`.

The "unified" representation lets adjacent organs share boundary nodes. Its
node lists cannot be derived from node counts, so the template stores every
organ's ring of node indices at every level (`rings`) and which fine nodes
each coarse node pools (`pooling`). `unified_graph.build_unified_template`
builds them from a template mask. There, unpooling copies: every fine node
takes the value of the coarse node that pooled it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
from typing import Any, Mapping, Sequence

import jraph
import numpy as np

from mask_hybridgnet_jax.io.atomic import write_json_atomic
from mask_hybridgnet_jax.organs import DatasetMetadata, Organ

logger = logging.getLogger(__name__)

REPRESENTATIONS = ("independent", "unified")
_FORMAT = "mask_hybridgnet_jax.GraphTemplate"
_FORMAT_VERSION = 1
# Each organ keeps at least this many nodes at the coarsest level, so that its
# ring has two distinct neighbours per node and upsampling stays well defined.
MIN_COARSEST_NODES = 4


class TopologyError(ValueError):
  """Invalid graph template; the message names the organ or file and the value."""


def nodes_for_organ(mean_length_px: float, scale: float, num_levels: int) -> int:
  """Return the number of full-resolution nodes for one organ.

  `N = max(16 f, f * round(round(m * s) / f))` with `f = 2**(num_levels - 1)`,
  so N is divisible by f and the coarsest level keeps at least 16 nodes.
  Python's `round` is used, which rounds halves to the even integer.

  Args:
    mean_length_px: mean boundary length of the organ over the training set, in
      pixels at the images' original resolution.
    scale: nodes per boundary pixel (0.05 for chest X-ray, 0.1 elsewhere).
    num_levels: number of resolution levels R (>= 1).

  Returns:
    N, a multiple of `2**(num_levels - 1)`.
  """
  _check_num_levels(num_levels)
  if not math.isfinite(mean_length_px) or mean_length_px < 0:
    raise TopologyError(
        f"mean boundary length {mean_length_px!r} px is not a finite non-negative number.")
  if not math.isfinite(scale) or scale <= 0:
    raise TopologyError(f"node scale {scale!r} must be a finite positive number.")
  factor = 2**(num_levels - 1)
  return max(16 * factor, factor * round(round(mean_length_px * scale) / factor))


@dataclasses.dataclass(frozen=True)
class GraphTemplate:
  """Organs, node counts and resolution levels of the contour graphs.

  Attributes:
    organ_names: organ names in metadata order.
    organ_labels: label value of each organ, same order.
    node_counts: full-resolution nodes of each organ, each divisible by
      `2**(num_levels - 1)` with at least 4 nodes per organ at the coarsest level.
    num_levels: number of resolution levels R; level i halves level i-1.
    representation: "independent" (one ring per organ, organs concatenated) or
      "unified" (adjacent organs share boundary nodes; needs `rings` and
      `pooling`).
    rings: unified only. `rings[level][organ]` is the organ's node indices at
      that level in circular order. Shared nodes appear in several rings.
    pooling: unified only. `pooling[level][c]` is the nodes of `level` that
      coarse node c of `level + 1` averages, one or two of them. Every node
      of `level` belongs to exactly one coarse node.
  """

  organ_names: tuple[str, ...]
  organ_labels: tuple[int, ...]
  node_counts: tuple[int, ...]
  num_levels: int = 3
  representation: str = "independent"
  rings: tuple[tuple[tuple[int, ...], ...], ...] | None = None
  pooling: tuple[tuple[tuple[int, ...], ...], ...] | None = None

  def __post_init__(self):
    # Lists would make the template unhashable, and it is a static argument of
    # jitted functions, so sequences are converted to tuples here.
    object.__setattr__(self, "organ_names", tuple(self.organ_names))
    object.__setattr__(self, "organ_labels", tuple(self.organ_labels))
    object.__setattr__(self, "node_counts", tuple(self.node_counts))
    if self.rings is not None:
      object.__setattr__(self, "rings", _nested_tuples(self.rings, "rings"))
    if self.pooling is not None:
      object.__setattr__(self, "pooling", _nested_tuples(self.pooling, "pooling"))
    self._validate()

  def _validate(self) -> None:
    _check_num_levels(self.num_levels)
    if self.representation not in REPRESENTATIONS:
      raise TopologyError(
          f"graph representation {self.representation!r} is not supported; "
          f"use one of {list(REPRESENTATIONS)}.")
    if not self.organ_names:
      raise TopologyError("a graph template needs at least one organ.")
    if len(self.organ_labels) != len(self.organ_names):
      raise TopologyError(
          f"{len(self.organ_names)} organ names {list(self.organ_names)} but "
          f"{len(self.organ_labels)} labels {list(self.organ_labels)}; give one label "
          "per organ.")
    if len(self.node_counts) != len(self.organ_names):
      raise TopologyError(
          f"{len(self.organ_names)} organ names {list(self.organ_names)} but "
          f"{len(self.node_counts)} node counts {list(self.node_counts)}; give one node "
          "count per organ.")
    if len(set(self.organ_names)) != len(self.organ_names):
      raise TopologyError(f"organ names {list(self.organ_names)} contain duplicates.")
    if len(set(self.organ_labels)) != len(self.organ_labels):
      raise TopologyError(f"organ labels {list(self.organ_labels)} contain duplicates.")
    for name, label in zip(self.organ_names, self.organ_labels):
      if not isinstance(name, str) or not name:
        raise TopologyError(f"organ name {name!r} must be a non-empty string.")
      if isinstance(label, bool) or not isinstance(label, (int, np.integer)):
        raise TopologyError(f"organ {name!r}: label {label!r} must be an integer.")
    if self.representation == "unified":
      _validate_unified(self)
      return
    if self.rings is not None or self.pooling is not None:
      raise TopologyError(
          "rings and pooling describe a unified graph; an independent template derives "
          "its rings from the node counts, so leave them unset.")
    for name, count in zip(self.organ_names, self.node_counts):
      check_node_count(name, count, self.num_levels)

  # Organ and level bookkeeping.

  @property
  def organs(self) -> tuple[Organ, ...]:
    return tuple(Organ(n, int(l)) for n, l in zip(self.organ_names, self.organ_labels))

  @property
  def num_organs(self) -> int:
    return len(self.organ_names)

  def level_node_counts(self, level: int) -> tuple[int, ...]:
    """Return the node count of each organ's ring at `level` (0 = full resolution).

    In a unified graph shared nodes count once in every organ they belong to.
    """
    self._check_level(level)
    if self.representation == "unified":
      return tuple(len(ring) for ring in self.rings[level])
    return tuple(n // 2**level for n in self.node_counts)

  def num_nodes(self, level: int) -> int:
    """Return the number of graph nodes at `level`, each shared node counted once."""
    if self.representation == "unified":
      self._check_level(level)
      return 1 + max(max(ring) for ring in self.rings[level])
    return sum(self.level_node_counts(level))

  def organ_indices(self, level: int) -> tuple[slice | np.ndarray, ...]:
    """Return, per organ, the index that selects its ring from the nodes at `level`.

    `positions[:, index]` gives the organ's nodes `[B, n_organ, 2]` in circular
    order for either representation: a slice for independent templates and a
    read-only int32 array for unified ones.
    """
    if self.representation == "unified":
      self._check_level(level)
      return _unified_ring_indices(self, level)
    return self.organ_slices(level)

  def organ_slices(self, level: int) -> tuple[slice, ...]:
    """Return each organ's slice into the concatenated nodes at `level`.

    Only independent templates have slices; use `organ_indices` for code that
    accepts both representations.
    """
    if self.representation == "unified":
      raise TopologyError(
          "a unified graph template shares nodes between organs, so organs have no "
          "contiguous slices; use organ_indices(level).")
    slices = []
    start = 0
    for count in self.level_node_counts(level):
      slices.append(slice(start, start + count))
      start += count
    return tuple(slices)

  # Operators. Each returns a read-only numpy array that is computed once per
  # (template, level) and cached.

  def adjacency(self, level: int) -> np.ndarray:
    """Return the ring adjacency, float32 `[n, n]`.

    `A[u, v] = 1` when u and v follow each other in some organ's ring; an edge
    shared by two organs of a unified graph counts once.
    """
    self._check_level(level)
    return _adjacency(self, level)

  def scaled_laplacian(self, level: int) -> np.ndarray:
    """Return the Chebyshev-scaled Laplacian `-D^-1/2 A D^-1/2`, float32 `[n, n]`.

    This is `2 L_sym / lambda_max - I` with `lambda_max = 2`. Rows and columns of
    nodes with degree 0 are zero.
    """
    self._check_level(level)
    return _scaled_laplacian(self, level)

  def graph(self, level: int) -> jraph.GraphsTuple:
    """Return the graph at `level` as a `jraph.GraphsTuple`.

    Every ring edge appears in both directions, ordered by (sender, receiver).
    For the 4-node ring: senders `[0, 0, 1, 1, 2, 2, 3, 3]`, receivers
    `[1, 3, 0, 2, 1, 3, 0, 2]`.

    `edges` is float32 `[E]`, the scaled-Laplacian weight
    `-1 / sqrt(d_sender * d_receiver)` of each edge, so summing the weighted
    sender features at each receiver computes `L x`. `senders` and `receivers`
    are int32 `[E]`, `n_node` and `n_edge` int32 `[1]`, and `nodes` and
    `globals` are None.
    """
    self._check_level(level)
    return _graph(self, level)

  def downsample(self, level: int) -> np.ndarray:
    """Return the pooling operator from `level` to `level + 1`, float32 `[n(level+1), n(level)]`.

    Coarse node i of an organ is the mean of its fine nodes 2i and 2i+1. In a
    unified graph coarse node c is the mean of the nodes in `pooling[level][c]`.
    """
    self._check_level(level, coarser=True)
    return _downsample(self, level)

  def upsample(self, level: int) -> np.ndarray:
    """Return the unpooling operator from `level + 1` to `level`, float32 `[n(level), n(level+1)]`.

    Fine node 2i of an organ copies coarse node i. Fine node 2i+1 is the mean of
    coarse nodes i and i+1, wrapping around within the organ's ring. In a
    unified graph every fine node copies the coarse node that pooled it.
    """
    self._check_level(level, coarser=True)
    return _upsample(self, level)

  # Construction, serialisation and comparison.

  @classmethod
  def from_boundary_lengths(
      cls,
      organs: Sequence[Organ] | DatasetMetadata,
      mean_lengths: Mapping[str, float],
      scale: float,
      num_levels: int = 3,
      overrides: Mapping[str, int] | None = None,
  ) -> GraphTemplate:
    """Build a template with node counts from the organs' mean boundary lengths.

    Args:
      organs: organs in metadata order, or the dataset metadata itself.
      mean_lengths: organ name -> mean boundary length in original-resolution
        pixels over the training split.
      scale: nodes per boundary pixel (see `nodes_for_organ`).
      num_levels: number of resolution levels.
      overrides: organ name -> full-resolution node count used instead of the rule.
        An organ with an override needs no mean length.

    Raises:
      TopologyError: an override names an unknown organ, an organ has neither an
        override nor a valid mean length, or a node count is invalid.
    """
    if isinstance(organs, DatasetMetadata):
      organs = organs.organs
    overrides = dict(overrides or {})
    names = [o.name for o in organs]
    unknown = sorted(set(overrides) - set(names))
    if unknown:
      raise TopologyError(
          f"node count overrides name unknown organ(s) {unknown}; the organs are {names}.")
    extra = sorted(set(mean_lengths) - set(names))
    if extra:
      logger.warning("Mean boundary lengths given for organ(s) %s that are not in the "
                     "metadata %s; they are ignored.", extra, names)
    counts = []
    for organ in organs:
      if organ.name in overrides:
        counts.append(overrides[organ.name])
        continue
      if organ.name not in mean_lengths:
        raise TopologyError(
            f"organ {organ.name!r}: no mean boundary length given; compute it from the "
            "training split or set a node count override for this organ.")
      length = float(mean_lengths[organ.name])
      try:
        counts.append(nodes_for_organ(length, scale, num_levels))
      except TopologyError as e:
        raise TopologyError(
            f"organ {organ.name!r}: {e} An organ absent from every training image has "
            "no mean length; set a node count override for it.") from None
    return cls(
        organ_names=tuple(names),
        organ_labels=tuple(int(o.label) for o in organs),
        node_counts=tuple(int(c) for c in counts),
        num_levels=num_levels,
    )

  def to_dict(self) -> dict[str, Any]:
    data = {
        "format": _FORMAT,
        "version": _FORMAT_VERSION,
        "organs": [
            {"name": n, "label": int(l), "nodes": int(c)}
            for n, l, c in zip(self.organ_names, self.organ_labels, self.node_counts)
        ],
        "num_levels": int(self.num_levels),
        "representation": self.representation,
    }
    if self.representation == "unified":
      data["rings"] = [[list(ring) for ring in level] for level in self.rings]
      data["pooling"] = [[list(group) for group in level] for level in self.pooling]
    return data

  @classmethod
  def from_dict(cls, data: Any, source: str = "graph template") -> GraphTemplate:
    """Build a template from `to_dict` output; errors name `source`."""
    if not isinstance(data, dict):
      raise TopologyError(f"{source}: expected a JSON object, got {type(data).__name__}.")
    if data.get("format") != _FORMAT:
      raise TopologyError(
          f"{source}: field \"format\" is {data.get('format')!r}, expected {_FORMAT!r}; "
          "this is not a saved graph template.")
    if data.get("version") != _FORMAT_VERSION:
      raise TopologyError(
          f"{source}: template format version {data.get('version')!r} is not supported "
          f"(this code reads version {_FORMAT_VERSION}).")
    missing = sorted({"organs", "num_levels", "representation"} - set(data))
    if missing:
      raise TopologyError(f"{source}: missing field(s) {missing}.")
    organs = data["organs"]
    if not isinstance(organs, list):
      raise TopologyError(f"{source}: \"organs\" must be a list, got {organs!r}.")
    for i, entry in enumerate(organs):
      if not isinstance(entry, dict) or set(entry) != {"name", "label", "nodes"}:
        raise TopologyError(
            f"{source}: organs[{i}] must be an object with exactly \"name\", \"label\" "
            f"and \"nodes\", got {entry!r}.")
    try:
      return cls(
          organ_names=tuple(e["name"] for e in organs),
          organ_labels=tuple(e["label"] for e in organs),
          node_counts=tuple(e["nodes"] for e in organs),
          num_levels=data["num_levels"],
          representation=data["representation"],
          rings=data.get("rings"),
          pooling=data.get("pooling"),
      )
    except TopologyError as e:
      raise TopologyError(f"{source}: {e}") from None

  def save(self, path: str | os.PathLike[str]) -> None:
    """Write the template as JSON, atomically (a reader never sees a partial file)."""
    write_json_atomic(path, self.to_dict())

  @classmethod
  def load(cls, path: str | os.PathLike[str]) -> GraphTemplate:
    path = os.fspath(path)
    try:
      with open(path, encoding="utf-8") as f:
        data = json.load(f)
    except FileNotFoundError:
      raise TopologyError(f"{path}: graph template file not found.") from None
    except json.JSONDecodeError as e:
      raise TopologyError(f"{path}: invalid JSON ({e}).") from None
    return cls.from_dict(data, source=path)

  def differences(
      self,
      other: GraphTemplate,
      *,
      this_name: str = "this template",
      other_name: str = "other template",
  ) -> list[str]:
    """List the mismatches between two templates in words; empty when they agree.

    Organs are matched by name, so a reordering is reported as such and node
    counts and labels are compared organ by organ.
    """
    diffs = []
    if self.organ_names != other.organ_names:
      if set(self.organ_names) == set(other.organ_names):
        diffs.append(
            f"organ order differs: {this_name} has {list(self.organ_names)}, "
            f"{other_name} has {list(other.organ_names)}.")
      else:
        only_this = [n for n in self.organ_names if n not in other.organ_names]
        only_other = [n for n in other.organ_names if n not in self.organ_names]
        if only_this:
          diffs.append(f"organ(s) {only_this} only in {this_name}.")
        if only_other:
          diffs.append(f"organ(s) {only_other} only in {other_name}.")
    other_organs = {n: (l, c) for n, l, c in zip(
        other.organ_names, other.organ_labels, other.node_counts)}
    for name, label, count in zip(self.organ_names, self.organ_labels, self.node_counts):
      if name not in other_organs:
        continue
      other_label, other_count = other_organs[name]
      if count != other_count:
        diffs.append(
            f"organ {name!r}: {count} nodes in {this_name}, {other_count} in {other_name}.")
      if label != other_label:
        diffs.append(
            f"organ {name!r}: label {label} in {this_name}, {other_label} in {other_name}.")
    if self.num_levels != other.num_levels:
      diffs.append(
          f"resolution levels: {self.num_levels} in {this_name}, {other.num_levels} in "
          f"{other_name}.")
    if self.representation != other.representation:
      diffs.append(
          f"representation: {self.representation!r} in {this_name}, "
          f"{other.representation!r} in {other_name}.")
    elif self.rings != other.rings or self.pooling != other.pooling:
      diffs.append(
          f"the shared-node structure of the unified graph differs between {this_name} "
          f"and {other_name} (built from different template masks or settings).")
    return diffs

  def _check_level(self, level: int, coarser: bool = False) -> None:
    top = self.num_levels - 1 if coarser else self.num_levels
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or not (
        0 <= level < top):
      what = "a level with a coarser level below it" if coarser else "a level"
      raise TopologyError(
          f"level {level!r} is not {what} of this template; valid levels are "
          f"0..{top - 1} (num_levels={self.num_levels}).")


def check_node_count(organ: str, count: Any, num_levels: int) -> None:
  """Raise TopologyError unless `count` nodes can be halved `num_levels - 1` times.

  The coarsest level must keep at least 4 nodes per organ.
  """
  factor = 2**(num_levels - 1)
  if isinstance(count, bool) or not isinstance(count, (int, np.integer)):
    raise TopologyError(f"organ {organ!r}: node count {count!r} must be an integer.")
  if count % factor:
    raise TopologyError(
        f"organ {organ!r}: node count {count} is not divisible by {factor} "
        f"(= 2**(num_levels - 1) with num_levels={num_levels}); use a multiple of "
        f"{factor}, for example {factor * max(1, round(count / factor))}.")
  if count // factor < MIN_COARSEST_NODES:
    raise TopologyError(
        f"organ {organ!r}: node count {count} leaves {count // factor} node(s) at the "
        f"coarsest of {num_levels} levels; at least {MIN_COARSEST_NODES} are needed, so "
        f"use at least {MIN_COARSEST_NODES * factor} nodes.")


def _nested_tuples(value: Any, name: str) -> tuple:
  """Convert `value[level][item]` lists of node indices to tuples of ints."""
  try:
    return tuple(tuple(tuple(int(i) for i in item) for item in level) for level in value)
  except (TypeError, ValueError):
    raise TopologyError(
        f"{name} must be a list (levels) of lists (items) of node indices, got "
        f"{str(value)[:200]}.") from None


def _validate_unified(template: GraphTemplate) -> None:
  """Check the rings and pooling of a unified template against each other."""
  rings, pooling = template.rings, template.pooling
  levels = template.num_levels
  if rings is None or pooling is None:
    raise TopologyError(
        "a unified graph template needs rings and pooling; build it from a template "
        "mask with unified_graph.build_unified_template.")
  if len(rings) != levels or len(pooling) != levels - 1:
    raise TopologyError(
        f"a unified template with num_levels={levels} needs rings for {levels} levels and "
        f"pooling for {levels - 1}, got {len(rings)} and {len(pooling)}.")
  for level, level_rings in enumerate(rings):
    if len(level_rings) != template.num_organs:
      raise TopologyError(
          f"level {level}: {len(level_rings)} rings for {template.num_organs} organs "
          f"{list(template.organ_names)}; give one ring per organ.")
    used = set()
    for name, ring in zip(template.organ_names, level_rings):
      if len(ring) < MIN_COARSEST_NODES:
        raise TopologyError(
            f"organ {name!r}: its ring has {len(ring)} node(s) at level {level}; at least "
            f"{MIN_COARSEST_NODES} are needed, so use more nodes or fewer levels.")
      if len(set(ring)) != len(ring) or min(ring) < 0:
        raise TopologyError(
            f"organ {name!r}: its ring at level {level} repeats a node or has a negative "
            f"index: {list(ring)[:50]}.")
      used.update(ring)
    if used != set(range(len(used))):
      raise TopologyError(
          f"level {level}: node indices {sorted(set(range(max(used) + 1)) - used)[:20]} "
          "belong to no organ ring; nodes must be numbered 0..n-1 without gaps.")
  for level, groups in enumerate(pooling):
    fine_nodes = sorted(i for group in groups for i in group)
    num_fine = 1 + max(max(ring) for ring in rings[level])
    num_coarse = 1 + max(max(ring) for ring in rings[level + 1])
    if fine_nodes != list(range(num_fine)) or len(groups) != num_coarse:
      raise TopologyError(
          f"pooling from level {level} must assign each of its {num_fine} nodes to exactly "
          f"one of the {num_coarse} nodes of level {level + 1}.")
    if any(not 1 <= len(group) <= 2 for group in groups):
      raise TopologyError(f"pooling from level {level}: a coarse node pools 1 or 2 nodes.")
    coarse_of = {i: c for c, group in enumerate(groups) for i in group}
    for name, fine, coarse in zip(template.organ_names, rings[level], rings[level + 1]):
      if pool_ring(fine, coarse_of) != coarse:
        raise TopologyError(
            f"organ {name!r}: its ring at level {level + 1} is not its level-{level} ring "
            "after pooling; the rings and pooling were not built together.")


def pool_ring(ring: Sequence[int], coarse_of: Mapping[int, int]) -> tuple[int, ...]:
  """Map a ring to coarse nodes and drop repeats of consecutive nodes, the wrap included.

  Example: ring (0, 1, 2, 3) with coarse_of {0: 0, 1: 0, 2: 1, 3: 2} gives (0, 1, 2).
  """
  mapped = [coarse_of[i] for i in ring]
  pooled = [c for k, c in enumerate(mapped) if k == 0 or c != mapped[k - 1]]
  while len(pooled) > 1 and pooled[-1] == pooled[0]:
    pooled.pop()
  return tuple(pooled)


def _check_num_levels(num_levels: Any) -> None:
  if isinstance(num_levels, bool) or not isinstance(num_levels, (int, np.integer)) or (
      num_levels < 1):
    raise TopologyError(f"num_levels {num_levels!r} must be an integer >= 1.")


def _read_only(array: np.ndarray) -> np.ndarray:
  array.setflags(write=False)
  return array


@functools.lru_cache(maxsize=None)
def _unified_ring_indices(template: GraphTemplate, level: int) -> tuple[np.ndarray, ...]:
  return tuple(_read_only(np.asarray(ring, np.int32)) for ring in template.rings[level])


def _rings(template: GraphTemplate, level: int) -> list[np.ndarray]:
  if template.representation == "unified":
    return list(_unified_ring_indices(template, level))
  return [np.arange(s.start, s.stop) for s in template.organ_slices(level)]


@functools.lru_cache(maxsize=None)
def _adjacency(template: GraphTemplate, level: int) -> np.ndarray:
  n = template.num_nodes(level)
  adjacency = np.zeros((n, n), np.float32)
  for ring in _rings(template, level):
    following = np.roll(ring, -1)
    adjacency[ring, following] = 1.0
    adjacency[following, ring] = 1.0
  return _read_only(adjacency)


@functools.lru_cache(maxsize=None)
def _scaled_laplacian(template: GraphTemplate, level: int) -> np.ndarray:
  return _read_only(scaled_laplacian_from_adjacency(_adjacency(template, level)))


def scaled_laplacian_from_adjacency(adjacency: np.ndarray) -> np.ndarray:
  """Return `-D^-1/2 A D^-1/2` for a symmetric adjacency `[n, n]`, float32.

  Nodes with degree 0 (padding) get zero rows and columns, so they neither send
  to nor receive from other nodes.
  """
  adjacency = np.asarray(adjacency, np.float64)
  degree = adjacency.sum(axis=1)
  inv_sqrt = np.zeros_like(degree)
  np.divide(1.0, np.sqrt(degree), out=inv_sqrt, where=degree > 0)
  return (-inv_sqrt[:, None] * adjacency * inv_sqrt[None, :]).astype(np.float32)


@functools.lru_cache(maxsize=None)
def _graph(template: GraphTemplate, level: int) -> jraph.GraphsTuple:
  adjacency = _adjacency(template, level)
  laplacian = _scaled_laplacian(template, level)
  # np.nonzero walks row-major, so edges are sorted by (sender, receiver).
  senders, receivers = np.nonzero(adjacency)
  weights = laplacian[receivers, senders]
  return jraph.GraphsTuple(
      nodes=None,
      edges=_read_only(weights.astype(np.float32)),
      senders=_read_only(senders.astype(np.int32)),
      receivers=_read_only(receivers.astype(np.int32)),
      n_node=_read_only(np.array([adjacency.shape[0]], np.int32)),
      n_edge=_read_only(np.array([senders.size], np.int32)),
      globals=None,
  )


@functools.lru_cache(maxsize=None)
def _downsample(template: GraphTemplate, level: int) -> np.ndarray:
  if template.representation == "unified":
    pool = np.zeros((template.num_nodes(level + 1), template.num_nodes(level)), np.float32)
    for coarse, group in enumerate(template.pooling[level]):
      pool[coarse, list(group)] = 1.0 / len(group)
    return _read_only(pool)
  fine_slices = template.organ_slices(level)
  coarse_slices = template.organ_slices(level + 1)
  pool = np.zeros((template.num_nodes(level + 1), template.num_nodes(level)), np.float32)
  for fine, coarse in zip(fine_slices, coarse_slices):
    nodes = np.arange(coarse.stop - coarse.start)
    pool[coarse.start + nodes, fine.start + 2 * nodes] = 0.5
    pool[coarse.start + nodes, fine.start + 2 * nodes + 1] = 0.5
  return _read_only(pool)


@functools.lru_cache(maxsize=None)
def _upsample(template: GraphTemplate, level: int) -> np.ndarray:
  if template.representation == "unified":
    unpool = np.zeros((template.num_nodes(level), template.num_nodes(level + 1)), np.float32)
    for coarse, group in enumerate(template.pooling[level]):
      unpool[list(group), coarse] = 1.0
    return _read_only(unpool)
  fine_slices = template.organ_slices(level)
  coarse_slices = template.organ_slices(level + 1)
  unpool = np.zeros((template.num_nodes(level), template.num_nodes(level + 1)), np.float32)
  for fine, coarse in zip(fine_slices, coarse_slices):
    size = coarse.stop - coarse.start
    nodes = np.arange(size)
    unpool[fine.start + 2 * nodes, coarse.start + nodes] = 1.0
    unpool[fine.start + 2 * nodes + 1, coarse.start + nodes] = 0.5
    unpool[fine.start + 2 * nodes + 1, coarse.start + (nodes + 1) % size] = 0.5
  return _read_only(unpool)
