"""The reference configuration, embedded in the package.

`configs/default.py` returns it unchanged; the other config files start from
it and change a few fields. It lives in the package so that installed copies
(and `mask-hybridgnet demo`) work without a checkout of `configs/`.

Reference values: input 512, SE-ResNeXt encoder, batch 1, 250,000 examples
(12-24 h on one GPU). For GPUs and TPUs; see `configs/montgomery.py` for a
CPU-sized variant.
"""

import ml_collections

from mask_hybridgnet_jax.augment import default_augment_config
from mask_hybridgnet_jax.losses.schedules import default_loss_config


def default_config() -> ml_collections.ConfigDict:
  """Return the reference configuration; the config files start from it."""
  config = ml_collections.ConfigDict()

  config.dataset = ml_collections.ConfigDict()
  # Builder name: "mask_folder" (images/ + masks/ + metadata.json) or "montgomery".
  config.dataset.name = "mask_folder"
  # Folder with the source files, as distributed (the TFDS manual_dir).
  config.dataset.manual_dir = ""
  # Where the prepared array_record files go; empty means <workdir>/data.
  config.dataset.data_dir = ""
  # Square network input size S in pixels.
  config.dataset.image_size = 512
  config.dataset.split_seed = 0
  # Treat degenerate organ masks as absent (with a warning) instead of failing.
  config.dataset.skip_degenerate = False

  # What the encoder reads: "image" ([B, S, S, 1]) or "masks" (the organ
  # masks, [B, S, S, O]; set model.input_channels to the organ count O). A
  # mask-input model turns existing masks into graphs with correspondence.
  config.input = "image"

  config.graph = ml_collections.ConfigDict()
  # Nodes per organ = f * round(round(mean boundary length * scale) / f), at least 16 f.
  config.graph.scale_factor = 0.1
  config.graph.num_levels = 3
  # Organ name -> full-resolution node count, overriding the rule.
  config.graph.node_overrides = ml_collections.ConfigDict()

  config.model = ml_collections.ConfigDict()
  config.model.block = "se_resnext"
  config.model.filters = 16
  config.model.latent_dim = 64
  config.model.cheb_k = 6
  # "group" (per-sample), "instance" (per-sample) or "batch" (the reference).
  config.model.norm = "group"
  config.model.dtype = "float32"
  config.model.log_var_clip = 10.0
  config.model.propagation = "dense"
  config.model.input_channels = 1

  config.loss = default_loss_config()
  config.augment = default_augment_config()

  config.optim = ml_collections.ConfigDict()
  config.optim.learning_rate = 1e-4
  # Coupled L2: decay * params is added to the gradient before Adam.
  config.optim.weight_decay = 1e-6
  # The learning rate is multiplied by decay_factor once decay_fraction of
  # the training examples have been seen.
  config.optim.decay_fraction = 0.5
  config.optim.decay_factor = 0.1

  config.train = ml_collections.ConfigDict()
  # T in the loss schedules: examples seen over the whole run.
  config.train.total_examples = 250_000
  config.train.batch_size = 1
  config.train.seed = 0
  config.train.log_every_steps = 100
  config.train.eval_every_steps = 5_000
  config.train.checkpoint_every_steps = 5_000
  config.train.keep_checkpoints = 3
  config.train.eval_batch_size = 8
  # Stop with an error naming the step when the loss turns NaN or Inf.
  config.train.stop_on_nonfinite = True

  return config
