"""Inference: trained workdir + images -> node positions, masks and overlays.

Images of any size are padded to a square and resized to the network input
on the host, so every batch has one shape and the jitted model compiles once
per batch size. The last batch is padded to full size with copies.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Callable, Iterable, Sequence

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from mask_hybridgnet_jax import config_utils
from mask_hybridgnet_jax.contours import fill_polygon, organ_masks
from mask_hybridgnet_jax.io.atomic import write_json_atomic, write_png_atomic
from mask_hybridgnet_jax.io.images import (
    IMAGE_SUFFIXES, ImageReadError, image_stem, image_suffix, read_image, read_label_map)
from mask_hybridgnet_jax.models.hybridgnet import build_model
from mask_hybridgnet_jax.organs import DatasetMetadata
from mask_hybridgnet_jax.preprocess import SquareTransform, prepare_image, resize_masks
from mask_hybridgnet_jax.topology import GraphTemplate
from mask_hybridgnet_jax.train import checkpoint as checkpoint_lib
from mask_hybridgnet_jax.train.state import create_train_state
from mask_hybridgnet_jax.train.step import input_kind_of, make_predict_fn

logger = logging.getLogger(__name__)


class WorkdirError(ValueError):
  """A workdir is missing files needed for inference."""


@dataclasses.dataclass
class TrainedModel:
  """A model restored from a training workdir, ready for inference."""

  config: ml_collections.ConfigDict
  template: GraphTemplate
  metadata: DatasetMetadata
  model: Any
  variables: dict[str, Any]
  step: int
  checkpoint_dir: str

  @property
  def image_size(self) -> int:
    return self.config.dataset.image_size

  @property
  def input_kind(self) -> str:
    """What the encoder reads: "image" or "masks"."""
    return input_kind_of(self.config)


@dataclasses.dataclass
class Prediction:
  """Nodes of one image in original-image pixels.

  Attributes:
    nodes: organ name -> `[N, 2]` (x, y) in node order.
    std: organ name -> `[N]` spread of each node over latent samples, in
      original pixels; zeros when no samples were drawn.
    transform: the map between original and network pixels.
    pixel_masks: dual models only: organ name -> bool `[H, W]` mask of the
      pixel decoder at the original size; None otherwise.
  """

  nodes: dict[str, np.ndarray]
  std: dict[str, np.ndarray]
  transform: SquareTransform
  pixel_masks: dict[str, np.ndarray] | None = None


def load_trained_model(workdir: str, checkpoint: str = "best") -> TrainedModel:
  """Restore the `best` (lowest validation loss) or `latest` checkpoint of a workdir."""
  if checkpoint not in ("best", "latest"):
    raise ValueError(f'checkpoint must be "best" or "latest", got {checkpoint!r}')

  config_path = os.path.join(workdir, "config.json")
  if not os.path.exists(config_path):
    raise WorkdirError(
        f"{workdir} is not a training workdir: {config_path} is missing. "
        "Train first with `mask-hybridgnet train --workdir ...`.")
  with open(config_path, encoding="utf-8") as f:
    config = config_utils.config_from_json(f.read())

  directory = os.path.join(
      os.path.abspath(workdir),
      checkpoint_lib.BEST_DIR if checkpoint == "best" else checkpoint_lib.LATEST_DIR)
  manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(create=False)) \
      if os.path.isdir(directory) else None
  step = manager.latest_step() if manager is not None else None
  if step is None and checkpoint == "best":
    # A run stopped before its first evaluation has no best checkpoint yet.
    logger.warning("no best checkpoint in %s; using the latest one", workdir)
    return load_trained_model(workdir, "latest")
  if step is None:
    raise WorkdirError(f"no checkpoint found in {directory}; train longer or check the workdir")

  meta = checkpoint_lib.read_meta(manager, step)
  template = GraphTemplate.from_dict(meta["template"])
  metadata = DatasetMetadata.from_dict(meta["dataset_metadata"], source=f"{directory}/{step}")
  model = build_model(config.model, template)
  target = create_train_state(model, config, jax.random.PRNGKey(0))
  current_meta = checkpoint_lib.build_meta(
      config.to_dict(), template.to_dict(), metadata.to_dict(), target.params)
  state = checkpoint_lib.restore(manager, step, target, current_meta)
  manager.close()
  variables = {"params": state.params}
  if state.batch_stats:
    variables["batch_stats"] = state.batch_stats
  return TrainedModel(config, template, metadata, model, variables, step, f"{directory}/{step}")


class Predictor:
  """Batched inference with one compiled program per batch size."""

  def __init__(self, trained: TrainedModel, batch_size: int = 8, num_samples: int = 0,
               seed: int = 0):
    if batch_size < 1:
      raise ValueError(f"batch size must be at least 1, got {batch_size}")
    if num_samples < 0:
      raise ValueError(f"number of latent samples must be >= 0, got {num_samples}")
    self.trained = trained
    self.batch_size = batch_size
    self.num_samples = num_samples
    self._rng = jax.random.PRNGKey(seed)
    self._predict = make_predict_fn(trained.model)

  @property
  def is_dual(self) -> bool:
    return bool(getattr(self.trained.model, "dual", False))

  def predict_network_images(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Predict from prepared network inputs.

    Args:
      images: `[B, S, S]` or `[B, S, S, C]` float32 in [0, 1].

    Returns:
      Positions `[B, N, 2]` and node spreads `[B, N]`, both in normalised units.
    """
    positions, spreads, _ = self.predict_network_outputs(images)
    return positions, spreads

  def predict_network_outputs(
      self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Predict positions, node spreads and, for dual models, pixel masks.

    Returns:
      `(positions [B, N, 2], spreads [B, N], masks)`: masks are the pixel
      decoder's probabilities `[B, S, S, O]` for a dual model, else None.
    """
    images = np.asarray(images, np.float32)
    if images.ndim == 3:
      images = images[..., None]
    count = images.shape[0]
    positions, spreads, masks = [], [], []
    for start in range(0, count, self.batch_size):
      chunk = images[start:start + self.batch_size]
      real = chunk.shape[0]
      if real < self.batch_size:
        padding = np.repeat(chunk[-1:], self.batch_size - real, axis=0)
        chunk = np.concatenate([chunk, padding])
      self._rng, key = jax.random.split(self._rng)
      out_positions, aux = self._predict(
          self.trained.variables, chunk, key, num_samples=self.num_samples)
      positions.append(np.asarray(out_positions)[:real])
      spreads.append(np.asarray(aux["std"])[:real])
      if "masks" in aux:
        masks.append(np.asarray(aux["masks"])[:real])
    return (np.concatenate(positions), np.concatenate(spreads),
            np.concatenate(masks) if masks else None)

  def predict_images(self, images: Sequence[np.ndarray]) -> list[Prediction]:
    """Predict nodes in original-image pixels for raw `[H, W]` images."""
    if self.trained.input_kind != "image":
      raise ValueError(
          f"the model in {self.trained.checkpoint_dir} reads {self.trained.input_kind}, not "
          "images; use predict_label_maps (the `mask2graph` command) instead.")
    size = self.trained.image_size
    prepared, transforms = [], []
    for image in images:
      network_image, transform = prepare_image(image, size)
      prepared.append(network_image)
      transforms.append(transform)
    if not prepared:
      return []
    positions, spreads, masks = self.predict_network_outputs(np.stack(prepared))
    if masks is None:
      masks = [None] * len(positions)
    return [self.to_prediction(p, s, t, m)
            for p, s, t, m in zip(positions, spreads, transforms, masks)]

  def predict_label_maps(self, label_maps: Sequence[np.ndarray],
                         sources: Sequence[str] | None = None) -> list[Prediction]:
    """Turn label maps into graphs with a mask-input model.

    Args:
      label_maps: integer `[H, W]` maps with the organ labels of the model's
        dataset metadata (0 is background).
      sources: file names used in error messages.

    Returns:
      One `Prediction` per map, nodes in the map's pixels.

    Raises:
      ValueError: the model reads images, or a map contains a value that is
        not an organ label.
    """
    if self.trained.input_kind != "masks":
      raise ValueError(
          f"the model in {self.trained.checkpoint_dir} reads images, not masks; train one "
          "with --config.input=masks to turn masks into graphs.")
    size = self.trained.image_size
    organs = self.trained.metadata.organs
    sources = list(sources) if sources is not None else [
        f"label map {i}" for i in range(len(label_maps))]
    prepared, transforms = [], []
    for label_map, source in zip(label_maps, sources):
      label_map = np.asarray(label_map)
      masks = organ_masks(label_map, organs, source=source)
      transform = SquareTransform(label_map.shape[0], label_map.shape[1], size)
      # [O, S, S] -> [S, S, O]: one input channel per organ, in metadata order.
      prepared.append(np.moveaxis(resize_masks(masks, transform), 0, -1).astype(np.float32))
      transforms.append(transform)
    if not prepared:
      return []
    positions, spreads = self.predict_network_images(np.stack(prepared))
    return [self.to_prediction(p, s, t) for p, s, t in zip(positions, spreads, transforms)]

  def to_prediction(self, positions: np.ndarray, spread: np.ndarray,
                    transform: SquareTransform,
                    network_masks: np.ndarray | None = None) -> Prediction:
    """Split normalised positions `[N, 2]` by organ and map them to original pixels.

    `network_masks`, the pixel decoder's probabilities `[S, S, O]`, become
    `Prediction.pixel_masks` when given.
    """
    template = self.trained.template
    nodes, std = {}, {}
    for name, organ_slice in zip(template.organ_names, template.organ_indices(0)):
      nodes[name] = np.asarray(transform.from_normalized(positions[organ_slice]), np.float64)
      # A spread in normalised units is S / scale original pixels per unit.
      std[name] = spread[organ_slice] * transform.size / transform.scale
    pixel_masks = None
    if network_masks is not None:
      original = network_masks_to_original(network_masks, transform)
      pixel_masks = dict(zip(template.organ_names, original))
    return Prediction(nodes, std, transform, pixel_masks)


def network_masks_to_original(probabilities: np.ndarray,
                              transform: SquareTransform) -> np.ndarray:
  """Threshold network-resolution probabilities at 0.5 and map them to the original size.

  Each original pixel takes the value of the network pixel nearest to its
  centre under `transform`.

  Args:
    probabilities: `[S, S, O]` mask probabilities.
    transform: the map between original and network pixels.

  Returns:
    bool `[O, H, W]`.
  """
  size = probabilities.shape[0]
  columns = np.arange(transform.width, dtype=np.float64)
  rows = np.arange(transform.height, dtype=np.float64)
  x = transform.to_network(np.stack([columns, np.zeros_like(columns)], axis=1))[:, 0]
  y = transform.to_network(np.stack([np.zeros_like(rows), rows], axis=1))[:, 1]
  x_index = np.clip(np.rint(x), 0, size - 1).astype(np.int64)
  y_index = np.clip(np.rint(y), 0, size - 1).astype(np.int64)
  inside = np.asarray(probabilities) > 0.5
  return np.moveaxis(inside[y_index[:, None], x_index[None, :]], -1, 0)


def prediction_label_map(prediction: Prediction, metadata: DatasetMetadata) -> np.ndarray:
  """Fill each organ's polygon at the original size; later organs overwrite earlier ones."""
  height, width = prediction.transform.height, prediction.transform.width
  dtype = np.uint8 if max(metadata.organ_labels) <= 255 else np.uint16
  label_map = np.zeros((height, width), dtype)
  for organ in metadata.organs:
    label_map[fill_polygon(prediction.nodes[organ.name], (height, width))] = organ.label
  return label_map


def pixel_label_map(prediction: Prediction, metadata: DatasetMetadata) -> np.ndarray:
  """Label map of a dual model's pixel masks; later organs overwrite earlier ones."""
  if prediction.pixel_masks is None:
    raise ValueError("this prediction has no pixel masks; it was not made by a dual model.")
  dtype = np.uint8 if max(metadata.organ_labels) <= 255 else np.uint16
  label_map = np.zeros((prediction.transform.height, prediction.transform.width), dtype)
  for organ in metadata.organs:
    label_map[prediction.pixel_masks[organ.name]] = organ.label
  return label_map


def prediction_masks(prediction: Prediction, organ_names: Sequence[str]) -> np.ndarray:
  """Per-organ filled polygons `[O, H, W]` bool at the original size."""
  shape = (prediction.transform.height, prediction.transform.width)
  return np.stack([fill_polygon(prediction.nodes[name], shape) for name in organ_names])


def landmarks_json(prediction: Prediction, with_std: bool = False) -> dict[str, Any]:
  """`{organ: [[x, y], ...]}` in original pixels; with_std adds `{organ}_std` lists."""
  data: dict[str, Any] = {
      name: np.round(nodes, 3).tolist() for name, nodes in prediction.nodes.items()}
  if with_std:
    for name, values in prediction.std.items():
      data[f"{name}_std"] = np.round(values, 3).tolist()
  return data


def find_images(inputs: Iterable[str]) -> list[str]:
  """Expand files and folders into image paths (folders: supported suffixes, sorted)."""
  paths = []
  for item in inputs:
    if os.path.isdir(item):
      for name in sorted(os.listdir(item)):
        path = os.path.join(item, name)
        if os.path.isfile(path) and image_suffix(name) in IMAGE_SUFFIXES:
          paths.append(path)
    elif os.path.isfile(item):
      paths.append(item)
    else:
      raise FileNotFoundError(f"input not found: {item}")
  return paths


@dataclasses.dataclass
class PredictReport:
  """Outcome of `predict_files`: outputs per input and failures with reasons."""

  outputs: dict[str, list[str]]
  failures: dict[str, str]


def _load_by_stem(
    paths: Sequence[str],
    read: Callable[[str], np.ndarray],
    errors: tuple[type[Exception], ...],
) -> tuple[list[tuple[str, str, np.ndarray]], dict[str, str]]:
  """Read each path once per output stem; return ([(path, stem, array)], failures).

  A path whose stem an earlier path already took, or whose `read` raises one
  of `errors`, goes to failures (path -> reason) instead, so that one bad
  file never overwrites or stops the others.
  """
  failures: dict[str, str] = {}
  loaded: list[tuple[str, str, np.ndarray]] = []
  stems: dict[str, str] = {}
  for path in paths:
    stem = image_stem(path)
    if stem in stems:
      failures[path] = f"output name {stem!r} is already used by {stems[stem]}"
      continue
    try:
      array = read(path)
    except errors as e:
      failures[path] = str(e)
      continue
    stems[stem] = path
    loaded.append((path, stem, array))
  return loaded, failures


def predict_files(predictor: Predictor, paths: Sequence[str], output_dir: str,
                  overlay: bool = True, write_pixel_masks: bool = False) -> PredictReport:
  """Write `<stem>.json`, `<stem>_mask.png` and optionally `<stem>_overlay.png` per image.

  With `write_pixel_masks`, a dual model's pixel decoder output is also
  written as the label map `<stem>_pixel_mask.png`, so that both heads can be
  compared on the same image.

  The stem is the file name without its last suffix (`a.b.JPG` -> `a.b`), or
  without `.nii.gz` for that two-part suffix.
  Unreadable files and duplicate stems are recorded in `failures` and the
  other images are still processed.
  """
  from mask_hybridgnet_jax import visualize  # matplotlib is only needed here

  if predictor.trained.input_kind != "image":
    raise ValueError(
        f"the model in {predictor.trained.checkpoint_dir} reads masks, not images; use "
        "`mask-hybridgnet mask2graph` for it.")
  if write_pixel_masks and not predictor.is_dual:
    raise ValueError(
        "pixel masks were requested but the model has no pixel decoder; train with "
        "--config.model.dual=True or leave out the pixel-mask option.")
  os.makedirs(output_dir, exist_ok=True)
  loaded, failures = _load_by_stem(paths, read_image, (ImageReadError,))

  outputs: dict[str, list[str]] = {}
  metadata = predictor.trained.metadata
  step = predictor.batch_size
  with_std = predictor.num_samples > 0
  for start in range(0, len(loaded), step):
    chunk = loaded[start:start + step]
    predictions = predictor.predict_images([image for _, _, image in chunk])
    for (path, stem, image), prediction in zip(chunk, predictions):
      written = []
      json_path = os.path.join(output_dir, f"{stem}.json")
      write_json_atomic(json_path, landmarks_json(prediction, with_std))
      written.append(json_path)
      mask_path = os.path.join(output_dir, f"{stem}_mask.png")
      write_png_atomic(mask_path, prediction_label_map(prediction, metadata))
      written.append(mask_path)
      if write_pixel_masks:
        pixel_path = os.path.join(output_dir, f"{stem}_pixel_mask.png")
        write_png_atomic(pixel_path, pixel_label_map(prediction, metadata))
        written.append(pixel_path)
      if overlay:
        overlay_path = os.path.join(output_dir, f"{stem}_overlay.png")
        write_png_atomic(overlay_path, visualize.draw_overlay(
            image, prediction.nodes, std=prediction.std if with_std else None))
        written.append(overlay_path)
      outputs[path] = written
  return PredictReport(outputs, failures)


@dataclasses.dataclass
class MaskToGraphReport:
  """Outcome of `mask_files_to_graphs`.

  Attributes:
    outputs: input path -> written files.
    failures: input path -> reason.
    fidelity: one row per mask and organ: `id`, `organ`, `dice` of the
      graph's filled polygon against the input mask at the original size
      (NaN when the organ is absent from the mask, which the graph still
      predicts).
  """

  outputs: dict[str, list[str]]
  failures: dict[str, str]
  fidelity: list[dict[str, Any]]


def mask_files_to_graphs(predictor: Predictor, paths: Sequence[str], output_dir: str,
                         overlay: bool = True) -> MaskToGraphReport:
  """Write `<stem>.json` (nodes) and optionally `<stem>_overlay.png` per label-map file.

  Unreadable files, label values that are not organ labels and duplicate
  stems are recorded in `failures`; the other files are still processed.
  """
  from mask_hybridgnet_jax import visualize  # matplotlib is only needed here
  from mask_hybridgnet_jax.contours import LabelValueError
  from mask_hybridgnet_jax.metrics import dice

  os.makedirs(output_dir, exist_ok=True)
  metadata = predictor.trained.metadata

  def read_checked(path: str) -> np.ndarray:
    label_map = read_label_map(path)
    organ_masks(label_map, metadata.organs, source=path)
    return label_map

  loaded, failures = _load_by_stem(
      paths, read_checked, (ImageReadError, LabelValueError, ValueError))

  outputs: dict[str, list[str]] = {}
  fidelity: list[dict[str, Any]] = []
  with_std = predictor.num_samples > 0
  names = [organ.name for organ in metadata.organs]
  for start in range(0, len(loaded), predictor.batch_size):
    chunk = loaded[start:start + predictor.batch_size]
    predictions = predictor.predict_label_maps(
        [label_map for _, _, label_map in chunk], [path for path, _, _ in chunk])
    for (path, stem, label_map), prediction in zip(chunk, predictions):
      truth = organ_masks(label_map, metadata.organs, source=path)
      filled = prediction_masks(prediction, names)
      for name, predicted, expected in zip(names, filled, truth):
        score = dice(predicted, expected) if expected.any() else float("nan")
        fidelity.append({"id": stem, "organ": name, "dice": score})
      written = [os.path.join(output_dir, f"{stem}.json")]
      write_json_atomic(written[0], landmarks_json(prediction, with_std))
      if overlay:
        written.append(os.path.join(output_dir, f"{stem}_overlay.png"))
        write_png_atomic(written[1], visualize.draw_overlay(
            label_map.astype(np.float32), prediction.nodes, std=prediction.std if with_std else None))
      outputs[path] = written
  return MaskToGraphReport(outputs, failures, fidelity)
