"""Per-node trajectories over a sequence of frames.

Each frame is segmented independently. Node i marks the same anatomical
place in every frame, so stacking the frames' nodes gives the trajectory of
every node, `[T, N, 2]` per organ, without any tracking step.
"""

from __future__ import annotations

import csv
import io
import os
from typing import Callable, Mapping, Sequence

import numpy as np

from mask_hybridgnet_jax.io.atomic import write_json_atomic, write_text_atomic
from mask_hybridgnet_jax.io.images import IMAGE_SUFFIXES, image_stem, image_suffix, read_image

# Maps a list of `[H, W]` frames to one `{organ: [N, 2]}` per frame, pixels.
FramePredictor = Callable[[Sequence[np.ndarray]], Sequence[Mapping[str, np.ndarray]]]

DICOM_SUFFIXES = (".dcm", ".dicom")
NIFTI_SUFFIXES = (".nii", ".nii.gz")


def read_frames(path: str) -> tuple[list[np.ndarray], list[str]]:
  """Read a frame sequence and name each frame.

  Args:
    path: a folder of images (sorted by file name), a multi-frame DICOM file
      (frames in stored order) or a NIfTI volume (one frame per slice along
      its k axis, as `io.nifti.read_nifti` returns `[D, H, W]`).

  Returns:
    `([H, W] float32 frames, frame names)`; names are file stems for a folder
    and `<stem>_<index>` for a multi-frame file.

  Raises:
    FileNotFoundError: the path is missing or the folder contains no image.
    ValueError: an unsupported file type or a file with fewer than one frame.
  """
  if os.path.isdir(path):
    names = sorted(n for n in os.listdir(path) if image_suffix(n) in IMAGE_SUFFIXES)
    # A frame silently left out would shift every later frame in time.
    unreadable = [n for n in names if not os.path.isfile(os.path.join(path, n))]
    if unreadable:
      raise FileNotFoundError(
          f"frames not found in {path}: {', '.join(unreadable)} (broken links or folders "
          "with image names); fix or remove them so that the sequence has no gap.")
    if not names:
      raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {path}")
    return [read_image(os.path.join(path, n)) for n in names], [image_stem(n) for n in names]
  if not os.path.isfile(path):
    raise FileNotFoundError(f"frames not found: {path}")
  lower = path.lower()
  if lower.endswith(DICOM_SUFFIXES):
    from mask_hybridgnet_jax.io.dicom import read_dicom
    volume = np.asarray(read_dicom(path).pixels, np.float32)
  elif lower.endswith(NIFTI_SUFFIXES):
    from mask_hybridgnet_jax.io.nifti import read_nifti
    volume = np.asarray(read_nifti(path).array, np.float32)
  else:
    raise ValueError(
        f"{path}: unsupported frame source; give a folder of images, a multi-frame DICOM "
        f"({', '.join(DICOM_SUFFIXES)}) or a NIfTI volume ({', '.join(NIFTI_SUFFIXES)}).")
  if volume.ndim == 2:
    volume = volume[None]
  if volume.ndim != 3 or volume.shape[0] < 1:
    raise ValueError(f"{path}: expected frames [T, H, W], got an array of shape {volume.shape}.")
  stem = os.path.basename(path).split(".", 1)[0]
  width = len(str(volume.shape[0] - 1))
  return list(volume), [f"{stem}_{t:0{width}d}" for t in range(volume.shape[0])]


def track(frames: Sequence[np.ndarray], predict: FramePredictor,
          batch_size: int = 8) -> dict[str, np.ndarray]:
  """Predict every frame and stack the nodes into trajectories.

  Args:
    frames: T frames `[H, W]`.
    predict: maps a list of frames to `{organ: [N, 2]}` per frame.
    batch_size: frames passed to `predict` at a time.

  Returns:
    organ name -> float64 `[T, N, 2]` (x, y) pixels.
  """
  if len(frames) == 0:
    raise ValueError("tracking needs at least one frame.")
  per_frame: list[Mapping[str, np.ndarray]] = []
  for start in range(0, len(frames), batch_size):
    per_frame.extend(predict(list(frames[start:start + batch_size])))
  if len(per_frame) != len(frames):
    raise ValueError(f"the predictor returned {len(per_frame)} results for {len(frames)} frames.")
  organs = list(per_frame[0])
  return {organ: np.stack([np.asarray(p[organ], np.float64) for p in per_frame])
          for organ in organs}


def displacements(trajectory: np.ndarray) -> np.ndarray:
  """Return `[T, N]` distances of each node from its position in frame 0, pixels."""
  trajectory = np.asarray(trajectory, np.float64)
  if trajectory.ndim != 3 or trajectory.shape[2] != 2:
    raise ValueError(f"trajectory must be [T, N, 2], got shape {trajectory.shape}.")
  difference = trajectory - trajectory[:1]
  return np.sqrt(np.sum(difference * difference, axis=-1))


def trajectories_csv(trajectories: Mapping[str, np.ndarray], frame_names: Sequence[str]) -> str:
  """Format trajectories as CSV: `frame, frame_name, organ, node, x, y, displacement`."""
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator="\n")
  writer.writerow(["frame", "frame_name", "organ", "node", "x", "y", "displacement"])
  for organ, trajectory in trajectories.items():
    moved = displacements(trajectory)
    for t in range(trajectory.shape[0]):
      for i in range(trajectory.shape[1]):
        x, y = trajectory[t, i]
        writer.writerow([t, frame_names[t], organ, i, f"{x:.3f}", f"{y:.3f}",
                         f"{moved[t, i]:.3f}"])
  return buffer.getvalue()


def write_trajectories(
    trajectories: Mapping[str, np.ndarray], frame_names: Sequence[str], output_dir: str,
) -> dict[str, str]:
  """Write `trajectories.json` (`{"frames": [...], organ: [T][N][2]}`) and `trajectories.csv`."""
  for organ, trajectory in trajectories.items():
    if trajectory.shape[0] != len(frame_names):
      raise ValueError(
          f"organ {organ!r} has {trajectory.shape[0]} frames but {len(frame_names)} frame names.")
  os.makedirs(output_dir, exist_ok=True)
  json_path = os.path.join(output_dir, "trajectories.json")
  csv_path = os.path.join(output_dir, "trajectories.csv")
  data: dict[str, object] = {"frames": list(frame_names), "unit": "pixels"}
  data.update({organ: np.round(t, 3).tolist() for organ, t in trajectories.items()})
  write_json_atomic(json_path, data)
  write_text_atomic(csv_path, trajectories_csv(trajectories, frame_names))
  return {"json": json_path, "csv": csv_path}
