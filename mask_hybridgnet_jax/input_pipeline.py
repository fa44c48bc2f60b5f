"""Batches of padded numpy examples for training and evaluation.

A data source is any object with `__len__` and `__getitem__(i) -> dict` of numpy
arrays holding the stored example features: `image` float32 [S, S] in [0, 1],
`masks` uint8 [O, S, S], `points` float32 [T, 2] (the boundary points of all
organs concatenated in organ order, normalised coordinates), `lengths` int32 [O]
(with sum T), `present` bool [O] and `id` (bytes or str). `tfds.data_source`
returns such an object; tests use a plain list of dicts.

Batches are dicts of numpy arrays:

- `image` float32 [B, S, S, 1], `masks` float32 [B, O, S, S] in {0, 1},
  `points` float32 [B, O, P, 2] (P = points budget, rows at and after
  `lengths` are zeros), `lengths` int32 [B, O], `present` bool [B, O],
  `valid` bool [B] (False for padding copies in the last evaluation batch);
- host-only fields that must stay out of jitted code: `ids` (numpy str [B]) and
  `index` (int32 [B], the position of each example in the source).

`device_batch(batch)` keeps the fields a jitted step accepts.

The training stream is an endless sequence of examples. Epoch e visits every
example once in the order `np.random.default_rng((seed, e)).permutation(n)`, and
batches are consecutive runs of B examples from that stream, crossing epoch
boundaries when needed. Because the stream depends only on the seed, a run that
restarts with `start_example=k` (the number of examples already consumed)
receives exactly the batches that an uninterrupted run would have received.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any, Iterator, Mapping, Protocol, Sequence

import numpy as np

logger = logging.getLogger(__name__)

# Fields that a jitted train or eval step accepts (strings cannot enter jit).
DEVICE_KEYS = ("image", "masks", "points", "lengths", "present", "valid")
# Fields that only the host uses, for logging and for looking up originals.
HOST_KEYS = ("ids", "index")


class DataSource(Protocol):
  """Random-access sequence of stored examples."""

  def __len__(self) -> int:
    ...

  def __getitem__(self, index: int) -> Mapping[str, Any]:
    ...


def example_id(example: Mapping[str, Any]) -> str:
  """Return the example id as str (stored ids are bytes, tests may use str)."""
  value = example.get("id", "")
  if isinstance(value, np.ndarray):
    value = value.item()
  if isinstance(value, bytes):
    return value.decode("utf-8", errors="replace")
  return str(value)


def _organ_label(organ_index: int, organ_names: Sequence[str] | None) -> str:
  if organ_names is not None and organ_index < len(organ_names):
    return f"organ '{organ_names[organ_index]}'"
  return f"organ index {organ_index}"


def pad_example(
    example: Mapping[str, Any],
    points_budget: int,
    organ_names: Sequence[str] | None = None,
) -> dict[str, Any]:
  """Split the concatenated boundary points per organ and pad them.

  Args:
    example: stored features `image` [S, S], `masks` [O, S, S], `points` [T, 2],
      `lengths` [O], `present` [O] and `id`.
    points_budget: P, the padded number of points per organ.
    organ_names: organ names in channel order, used only in error messages.

  Returns:
    Dict with `image` float32 [S, S, 1], `masks` float32 [O, S, S] in {0, 1}
    (any nonzero stored value counts as inside), `points` float32 [O, P, 2]
    with zero rows after each organ's length, `lengths` int32 [O],
    `present` bool [O] and `id` str.

  Raises:
    ValueError: a length exceeds `points_budget` (a gather past the padded size
      would be clamped silently inside jit), the lengths do not add up to the
      number of stored points, or `present` disagrees with the lengths.
  """
  if points_budget < 1:
    raise ValueError(f"points_budget must be a positive integer, got {points_budget}.")
  name = example_id(example)
  image = np.asarray(example["image"], dtype=np.float32)
  masks = np.asarray(example["masks"])
  points = np.asarray(example["points"], dtype=np.float32).reshape(-1, 2)
  lengths = np.asarray(example["lengths"], dtype=np.int64).reshape(-1)
  present = np.asarray(example["present"], dtype=bool).reshape(-1)

  if image.ndim != 2 or image.shape[0] != image.shape[1]:
    raise ValueError(
        f"example {name!r}: image must be a square [S, S] array, got shape {image.shape}.")
  num_organs = lengths.shape[0]
  if masks.shape != (num_organs,) + image.shape:
    raise ValueError(
        f"example {name!r}: masks have shape {masks.shape}, expected "
        f"{(num_organs,) + image.shape} for {num_organs} organ(s) and an image of shape "
        f"{image.shape}.")
  if present.shape[0] != num_organs:
    raise ValueError(
        f"example {name!r}: present has {present.shape[0]} entries but lengths has "
        f"{num_organs}.")
  if np.any(lengths < 0):
    raise ValueError(f"example {name!r}: negative point lengths {lengths.tolist()}.")
  if int(lengths.sum()) != points.shape[0]:
    raise ValueError(
        f"example {name!r}: lengths {lengths.tolist()} add up to {int(lengths.sum())} "
        f"but {points.shape[0]} points are stored; rebuild the dataset.")

  padded = np.zeros((num_organs, points_budget, 2), dtype=np.float32)
  offset = 0
  for organ_index in range(num_organs):
    length = int(lengths[organ_index])
    organ = _organ_label(organ_index, organ_names)
    if length > points_budget:
      raise ValueError(
          f"example {name!r}: {organ} has {length} boundary points, more than the "
          f"points budget {points_budget}; raise points_budget to at least {length} "
          "(the dataset metadata stores the budget computed from all splits).")
    if bool(present[organ_index]) != (length > 0):
      raise ValueError(
          f"example {name!r}: {organ} has present={bool(present[organ_index])} but "
          f"{length} boundary points; a present organ needs points and an absent one "
          "none. Rebuild the dataset.")
    padded[organ_index, :length] = points[offset:offset + length]
    offset += length

  return {
      "image": image[:, :, None],
      "masks": (masks > 0).astype(np.float32),
      "points": padded,
      "lengths": lengths.astype(np.int32),
      "present": present,
      "id": name,
  }


def collate(
    examples: Sequence[Mapping[str, Any]],
    indices: Sequence[int],
    valid: Sequence[bool],
) -> dict[str, np.ndarray]:
  """Stack padded examples (from `pad_example`) into one batch dict."""
  batch = {
      key: np.stack([example[key] for example in examples])
      for key in ("image", "masks", "points", "lengths", "present")
  }
  batch["valid"] = np.asarray(valid, dtype=bool)
  batch["ids"] = np.asarray([example["id"] for example in examples], dtype=str)
  batch["index"] = np.asarray(indices, dtype=np.int32)
  return batch


def device_batch(batch: Mapping[str, Any]) -> dict[str, Any]:
  """Return the fields of `batch` that a jitted step accepts (drops ids, index)."""
  return {key: batch[key] for key in DEVICE_KEYS}


def epoch_permutation(num_examples: int, seed: int, epoch: int) -> np.ndarray:
  """Return the example order of one epoch: int64 [num_examples]."""
  return np.random.default_rng((seed, epoch)).permutation(num_examples)


def _checked_num_examples(source: DataSource, batch_size: int, points_budget: int) -> int:
  num_examples = len(source)
  if batch_size < 1:
    raise ValueError(f"batch_size must be a positive integer, got {batch_size}.")
  if points_budget < 1:
    raise ValueError(f"points_budget must be a positive integer, got {points_budget}.")
  return num_examples


def stream_indices(num_examples: int, seed: int, start: int, count: int) -> np.ndarray:
  """Return the source indices at training-stream positions [start, start + count).

  Position k of the stream is example `epoch_permutation(n, seed, k // n)[k % n]`.

  Returns:
    int64 [count].
  """
  positions = np.arange(start, start + count, dtype=np.int64)
  epochs = positions // num_examples
  indices = np.empty(count, dtype=np.int64)
  for epoch in np.unique(epochs):
    selected = epochs == epoch
    order = epoch_permutation(num_examples, seed, int(epoch))
    indices[selected] = order[positions[selected] % num_examples]
  return indices


def _training_batches(
    source: DataSource,
    batch_size: int,
    points_budget: int,
    seed: int,
    organ_names: Sequence[str] | None,
    start: int,
) -> Iterator[dict[str, np.ndarray]]:
  num_examples = len(source)
  position = start
  while True:
    indices = stream_indices(num_examples, seed, position, batch_size)
    examples = [pad_example(source[int(i)], points_budget, organ_names) for i in indices]
    yield collate(examples, indices, [True] * batch_size)
    position += batch_size


class _ThreadPrefetcher:
  """Run an iterator in a daemon thread, keeping up to `buffer_size` items ready.

  An exception raised by the iterator is re-raised by `__next__` in the caller's
  thread. `close()` stops the thread and discards the items already produced.
  """

  _END = object()

  def __init__(self, iterator: Iterator[Any], buffer_size: int):
    self._iterator = iterator
    self._queue: queue.Queue[Any] = queue.Queue(maxsize=buffer_size)
    self._stop = threading.Event()
    self._finished = False
    self._thread = threading.Thread(
        target=self._produce, name="input_pipeline_prefetch", daemon=True)
    self._thread.start()

  def _put(self, item: Any) -> bool:
    """Put one item, waking every 0.1 s to check for `close()`; False once closed."""
    while not self._stop.is_set():
      try:
        self._queue.put(item, timeout=0.1)
        return True
      except queue.Full:
        continue
    return False

  def _produce(self) -> None:
    try:
      for item in self._iterator:
        if not self._put(item):
          return
      self._put(self._END)
    except BaseException as error:  # Re-raised in the consumer thread.
      self._put(error)

  def __iter__(self) -> _ThreadPrefetcher:
    return self

  def __next__(self) -> Any:
    if self._finished:
      raise StopIteration
    item = self._queue.get()
    if item is self._END:
      self._finished = True
      raise StopIteration
    if isinstance(item, BaseException):
      self._finished = True
      raise item
    return item

  def close(self) -> None:
    self._stop.set()
    # Empty the queue so that a producer blocked on a full queue wakes and stops.
    while True:
      try:
        self._queue.get_nowait()
      except queue.Empty:
        break
    self._thread.join(timeout=10.0)
    if self._thread.is_alive():
      logger.warning(
          "Prefetch thread did not stop within 10 s; it is a daemon thread and "
          "ends with the process.")
    self._finished = True


class BatchIterator:
  """Endless, resumable iterator of shuffled training batches.

  Epoch e visits the examples in the order of `epoch_permutation(n, seed, e)`.
  Batches are consecutive runs of `batch_size` examples of that stream. A batch
  may therefore end one epoch and start the next, and may be larger than the
  dataset. `examples_consumed` counts the examples returned so far
  (including `start_example`); store it in checkpoints and pass it back as
  `start_example` to continue the same sequence.

  Example:
    with BatchIterator(source, 8, points_budget=512, seed=0) as batches:
      for _ in range(num_steps):
        batch = next(batches)
        state, metrics = train_step(state, device_batch(batch))
  """

  def __init__(
      self,
      source: DataSource,
      batch_size: int,
      points_budget: int,
      *,
      seed: int = 0,
      start_example: int = 0,
      organ_names: Sequence[str] | None = None,
      prefetch: int = 2,
  ):
    """Initialise the iterator and start the prefetch thread.

    Args:
      source: data source of stored examples.
      batch_size: B, examples per batch.
      points_budget: P, padded points per organ (see `pad_example`).
      seed: non-negative integer that fixes the order of every epoch.
      start_example: number of examples of the stream already consumed.
      organ_names: organ names in channel order, used only in error messages.
      prefetch: batches prepared ahead in a background thread; 0 prepares
        each batch in the calling thread.

    Raises:
      ValueError: an empty source or an invalid argument.
    """
    num_examples = _checked_num_examples(source, batch_size, points_budget)
    if num_examples == 0:
      raise ValueError("The training data source is empty; there is nothing to iterate.")
    if seed < 0:
      raise ValueError(f"seed must be a non-negative integer, got {seed}.")
    if start_example < 0:
      raise ValueError(f"start_example must be non-negative, got {start_example}.")
    if prefetch < 0:
      raise ValueError(f"prefetch must be non-negative, got {prefetch}.")
    self._batch_size = batch_size
    self._examples_consumed = start_example
    # The generator holds no reference to self, so that an iterator dropped
    # without close() is garbage collected and __del__ stops the thread.
    self._batches: Iterator[dict[str, np.ndarray]] = _training_batches(
        source, batch_size, points_budget, seed, organ_names, start_example)
    self._prefetcher: _ThreadPrefetcher | None = None
    if prefetch > 0:
      self._prefetcher = _ThreadPrefetcher(self._batches, prefetch)
      self._batches = self._prefetcher

  @property
  def examples_consumed(self) -> int:
    """Examples of the stream returned so far, counting `start_example`."""
    return self._examples_consumed

  @property
  def batch_size(self) -> int:
    return self._batch_size

  def __iter__(self) -> BatchIterator:
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    batch = next(self._batches)
    self._examples_consumed += self._batch_size
    return batch

  def close(self) -> None:
    """Stop the prefetch thread (if any); calling it again does nothing."""
    # getattr because __del__ also runs when __init__ raised before the field.
    prefetcher = getattr(self, "_prefetcher", None)
    if prefetcher is not None:
      prefetcher.close()
      self._prefetcher = None

  def __del__(self) -> None:
    self.close()

  def __enter__(self) -> BatchIterator:
    return self

  def __exit__(self, *exc_info: Any) -> None:
    self.close()


def iterate_eval_batches(
    source: DataSource,
    batch_size: int,
    points_budget: int,
    organ_names: Sequence[str] | None = None,
) -> Iterator[dict[str, np.ndarray]]:
  """Yield every example once, in source order, in batches of `batch_size`.

  The last batch is filled up with copies of its last example marked
  `valid=False`, so every batch has the same shape and a jitted step compiles
  once. Means over a split must use only the valid entries. An empty source
  yields nothing.
  """
  num_examples = _checked_num_examples(source, batch_size, points_budget)
  for start in range(0, num_examples, batch_size):
    real = list(range(start, min(start + batch_size, num_examples)))
    examples = [pad_example(source[i], points_budget, organ_names) for i in real]
    num_padding = batch_size - len(real)
    indices = real + [real[-1]] * num_padding
    examples += [examples[-1]] * num_padding
    valid = [True] * len(real) + [False] * num_padding
    yield collate(examples, indices, valid)
