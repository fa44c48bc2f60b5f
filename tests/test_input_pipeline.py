"""Tests for input_pipeline.py: padding, epoch order, resuming, evaluation batches."""

from __future__ import annotations

import numpy as np
import pytest

from mask_hybridgnet_jax import input_pipeline

SIZE = 16
ORGANS = ("left", "right")


def make_stored_example(index: int, size: int = SIZE) -> dict[str, np.ndarray]:
  """Build stored features whose values identify the example.

  The image is constant index / 100, organ 0 has 3 + index % 4 points and organ
  1 is absent for every third example.
  """
  rng = np.random.default_rng(index)
  lengths = np.array([3 + index % 4, 0 if index % 3 == 0 else 5], np.int32)
  masks = np.zeros((2, size, size), np.uint8)
  masks[0, 2:6, 2:6] = 1
  if lengths[1]:
    masks[1, 8:12, 8:12] = 255
  return {
      "image": np.full((size, size), index / 100.0, np.float32),
      "masks": masks,
      "points": rng.random((int(lengths.sum()), 2)).astype(np.float32),
      "lengths": lengths,
      "present": lengths > 0,
      "spacing": np.array([1.0, 1.0], np.float32),
      "has_spacing": np.array(False),
      "original_size": np.array([size, size], np.int32),
      "masks_original": masks.copy(),
      "id": f"case{index:03d}".encode(),
  }


def make_source(count: int) -> list[dict[str, np.ndarray]]:
  return [make_stored_example(i) for i in range(count)]


def batch_indices(batches) -> np.ndarray:
  return np.concatenate([b["index"] for b in batches])


def take(iterator, count):
  return [next(iterator) for _ in range(count)]


def test_pad_example_splits_points_per_organ():
  example = make_stored_example(5)
  padded = input_pipeline.pad_example(example, points_budget=8)
  first = int(example["lengths"][0])
  np.testing.assert_array_equal(padded["points"][0, :first], example["points"][:first])
  np.testing.assert_array_equal(padded["points"][1, :5], example["points"][first:])


def test_pad_example_pads_with_zeros():
  example = make_stored_example(5)
  padded = input_pipeline.pad_example(example, points_budget=8)
  first = int(example["lengths"][0])
  assert np.all(padded["points"][0, first:] == 0.0)
  assert np.all(padded["points"][1, 5:] == 0.0)


def test_pad_example_shapes_and_dtypes():
  padded = input_pipeline.pad_example(make_stored_example(1), points_budget=8)
  assert padded["image"].shape == (SIZE, SIZE, 1)
  assert padded["image"].dtype == np.float32
  assert padded["masks"].dtype == np.float32
  assert padded["points"].shape == (2, 8, 2)
  assert padded["lengths"].dtype == np.int32
  assert padded["present"].dtype == bool
  assert padded["id"] == "case001"


def test_pad_example_masks_binary_from_255():
  padded = input_pipeline.pad_example(make_stored_example(1), points_budget=8)
  assert set(np.unique(padded["masks"]).tolist()) == {0.0, 1.0}
  assert padded["masks"][1].sum() == 16.0


def test_pad_example_over_budget_names_example_and_organ():
  example = make_stored_example(3)  # organ 0 has 6 points
  with pytest.raises(ValueError, match=r"case003.*organ 'left'.*6 boundary points"):
    input_pipeline.pad_example(example, points_budget=5, organ_names=ORGANS)


def test_pad_example_rejects_mismatched_point_count():
  example = make_stored_example(2)
  example["points"] = example["points"][:-1]
  with pytest.raises(ValueError, match="case002.*add up to"):
    input_pipeline.pad_example(example, points_budget=8)


def test_pad_example_rejects_present_without_points():
  example = make_stored_example(3)
  example["present"] = np.array([True, True])
  with pytest.raises(ValueError, match="case003.*organ index 1.*present=True"):
    input_pipeline.pad_example(example, points_budget=8)


def test_batch_fields_and_shapes():
  with input_pipeline.BatchIterator(make_source(5), 4, 8, seed=0) as batches:
    batch = next(batches)
  assert batch["image"].shape == (4, SIZE, SIZE, 1)
  assert batch["masks"].shape == (4, 2, SIZE, SIZE)
  assert batch["points"].shape == (4, 2, 8, 2)
  assert batch["lengths"].shape == (4, 2)
  assert batch["present"].shape == (4, 2)
  assert batch["valid"].all()
  assert batch["ids"].dtype.kind == "U"
  assert set(input_pipeline.device_batch(batch)) == set(input_pipeline.DEVICE_KEYS)


def test_batch_content_matches_source_index():
  source = make_source(5)
  with input_pipeline.BatchIterator(source, 4, 8, seed=0) as batches:
    batch = next(batches)
  for row, index in enumerate(batch["index"]):
    assert batch["ids"][row] == f"case{index:03d}"
    np.testing.assert_allclose(batch["image"][row], index / 100.0)


def test_each_epoch_is_seeded_permutation():
  source = make_source(7)
  with input_pipeline.BatchIterator(source, 3, 8, seed=11, prefetch=0) as batches:
    indices = batch_indices(take(batches, 7))  # 21 examples = 3 epochs
  for epoch in range(3):
    expected = np.random.default_rng((11, epoch)).permutation(7)
    np.testing.assert_array_equal(indices[7 * epoch:7 * epoch + 7], expected)


def test_epochs_differ():
  with input_pipeline.BatchIterator(make_source(7), 7, 8, seed=0, prefetch=0) as batches:
    first, second = take(batches, 2)
  assert not np.array_equal(first["index"], second["index"])


@pytest.mark.parametrize("start", [0, 1, 3, 5, 7, 13])
def test_resume_continues_same_sequence(start):
  source = make_source(7)
  with input_pipeline.BatchIterator(source, 3, 8, seed=4) as batches:
    reference = take(batches, 10)
  reference_indices = batch_indices(reference)
  reference_images = np.concatenate([b["image"] for b in reference])
  with input_pipeline.BatchIterator(source, 3, 8, seed=4, start_example=start) as batches:
    resumed = take(batches, 4)
  np.testing.assert_array_equal(batch_indices(resumed), reference_indices[start:start + 12])
  np.testing.assert_array_equal(
      np.concatenate([b["image"] for b in resumed]), reference_images[start:start + 12])


def test_examples_consumed_counts_start():
  with input_pipeline.BatchIterator(make_source(7), 3, 8, start_example=5) as batches:
    take(batches, 2)
    assert batches.examples_consumed == 11


def test_batch_larger_than_dataset_crosses_epochs():
  with input_pipeline.BatchIterator(make_source(3), 8, 8, seed=2, prefetch=0) as batches:
    batch = next(batches)
  expected = np.concatenate(
      [np.random.default_rng((2, epoch)).permutation(3) for epoch in range(3)])[:8]
  np.testing.assert_array_equal(batch["index"], expected)


def test_prefetch_matches_synchronous():
  source = make_source(6)
  with input_pipeline.BatchIterator(source, 4, 8, seed=1, prefetch=0) as batches:
    synchronous = take(batches, 5)
  with input_pipeline.BatchIterator(source, 4, 8, seed=1, prefetch=3) as batches:
    prefetched = take(batches, 5)
  for a, b in zip(synchronous, prefetched):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_source_error_reaches_consumer():
  source = make_source(6)
  source[4]["points"] = source[4]["points"][:-1]
  with input_pipeline.BatchIterator(source, 6, 8, seed=0, prefetch=2) as batches:
    with pytest.raises(ValueError, match="case004"):
      next(batches)


def test_close_stops_prefetch_thread():
  batches = input_pipeline.BatchIterator(make_source(6), 2, 8, prefetch=2)
  next(batches)
  thread = batches._prefetcher._thread
  batches.close()
  assert not thread.is_alive()


def test_empty_training_source_raises():
  with pytest.raises(ValueError, match="empty"):
    input_pipeline.BatchIterator([], 2, 8)


def test_eval_batches_in_order_with_padding():
  batches = list(input_pipeline.iterate_eval_batches(make_source(7), 3, 8))
  assert len(batches) == 3
  np.testing.assert_array_equal(batch_indices(batches), [0, 1, 2, 3, 4, 5, 6, 6, 6])
  np.testing.assert_array_equal(batches[-1]["valid"], [True, False, False])
  assert all(b["valid"].all() for b in batches[:-1])


def test_eval_padding_copies_last_example():
  last = list(input_pipeline.iterate_eval_batches(make_source(7), 3, 8))[-1]
  np.testing.assert_array_equal(last["image"][1], last["image"][0])
  np.testing.assert_array_equal(last["points"][2], last["points"][0])
  assert list(last["ids"]) == ["case006"] * 3


def test_eval_exact_multiple_has_no_padding():
  batches = list(input_pipeline.iterate_eval_batches(make_source(6), 3, 8))
  assert len(batches) == 2
  assert all(b["valid"].all() for b in batches)


def test_eval_empty_source_yields_nothing():
  assert list(input_pipeline.iterate_eval_batches([], 3, 8)) == []


def test_eval_over_budget_raises():
  with pytest.raises(ValueError, match="organ 'right'"):
    list(input_pipeline.iterate_eval_batches(make_source(3), 2, 4, organ_names=ORGANS))
