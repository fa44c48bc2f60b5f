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
  # Builder name: "mask_folder" (images/ + masks/ + metadata.json), "montgomery",
  # "hc18", "psfhs", "sunnybrook" or "jsrt_contours" (`mask-hybridgnet datasets`).
  config.dataset.name = "mask_folder"
  # Folder with the source files, as distributed (the TFDS manual_dir).
  config.dataset.manual_dir = ""
  # Where the prepared array_record files go; empty means <workdir>/data.
  config.dataset.data_dir = ""
  # Square network input size S in pixels.
  config.dataset.image_size = 512
  # Seed of the patient permutation behind the 70/10/20 train/validation/test split.
  config.dataset.split_seed = 0
  # Treat degenerate organ masks as absent (with a warning) instead of failing.
  config.dataset.skip_degenerate = False
  # Dataset-specific builder settings, e.g. mask_size for jsrt_contours.
  config.dataset.builder_options = ml_collections.ConfigDict()

  # What the encoder reads: "image" ([B, S, S, 1]) or "masks" (the organ
  # masks, [B, S, S, O]; set model.input_channels to the organ count O). A
  # mask-input model turns existing masks into graphs with correspondence.
  config.input = "image"

  config.graph = ml_collections.ConfigDict()
  # Nodes per organ = f * round(round(mean boundary length * scale) / f), at least 16 f.
  config.graph.scale_factor = 0.1
  # Graph resolutions (2 to 4). Each coarser level halves the nodes of every organ.
  config.graph.num_levels = 3
  # Organ name -> full-resolution node count, overriding the rule.
  config.graph.node_overrides = ml_collections.ConfigDict()
  # "independent" (one ring per organ) or "unified" (adjacent organs share
  # boundary nodes, built from a template mask).
  config.graph.representation = "independent"
  # Label-map file of the unified graph's template mask; empty means the first
  # training example that contains every organ.
  config.graph.template_mask = ""
  # Unified graph: boundary nodes of different organs closer than this merge,
  # in pixels of the template mask.
  config.graph.merge_distance_px = 1.8

  config.model = ml_collections.ConfigDict()
  config.model.block = "se_resnext"
  config.model.filters = 16
  config.model.latent_dim = 64
  config.model.cheb_k = 6
  # "group" (per-sample), "instance" (per-sample) or "batch" (the reference).
  config.model.norm = "group"
  config.model.dtype = "float32"
  config.model.log_var_clip = 10.0
  # "segment_sum" (edge list) or "dense" (n x n Laplacian product), same
  # result. The edge list was faster for the decoder's forward and backward
  # pass at batch 1 and 4 on a 2-core CPU (docs/benchmarks.md).
  # GPU and TPU were not measured.
  config.model.propagation = "segment_sum"
  config.model.input_channels = 1
  # Decode displacements from a learned per-node shape, initialised with the
  # training split's mean contour (mask_hybridgnet_jax/mean_shape.py). A
  # deviation from the published model (False): in 300 steps on four chest
  # X-rays it raised the Dice of the filled graphs from 0.58 to 0.84, because
  # every ring starts in node order (experiments/overfit_ordering.py).
  config.model.shape_prior = True
  # Add the U-Net pixel decoder: one sigmoid mask per organ, trained with Dice
  # and BCE from the first step, whose feature maps feed the graph skips.
  config.model.dual = False

  config.loss = default_loss_config()
  config.augment = default_augment_config()

  config.optim = ml_collections.ConfigDict()
  # Adam learning rate before the decay.
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
  # Examples per step, a multiple of the device count.
  config.train.batch_size = 1
  # Seed of parameter initialisation, batch order, augmentation and latent sampling.
  config.train.seed = 0
  # Steps between training records in <workdir>/metrics.jsonl.
  config.train.log_every_steps = 100
  # Steps between validation passes. The last step is always evaluated.
  config.train.eval_every_steps = 5_000
  # Steps between saves of the latest checkpoint (also saved at every evaluation).
  config.train.checkpoint_every_steps = 5_000
  # Latest checkpoints kept in <workdir>/checkpoints. <workdir>/best keeps the one
  # with the lowest validation loss.
  config.train.keep_checkpoints = 3
  # Images per batch in validation passes.
  config.train.eval_batch_size = 8
  # Stop with an error naming the step when the loss turns NaN or Inf.
  config.train.stop_on_nonfinite = True

  return config


def cpu_config() -> ml_collections.ConfigDict:
  """Return `default_config()` with the settings of the 2-core CPU configs.

  The dataset configs in `configs/` start from this and set the dataset, the
  graph scale factor and anything their data needs. The reasons for each value
  were measured on Montgomery chest X-rays (see docs/results.md).
  """
  config = default_config()
  # At 256 the step takes 2.6 times as long as at 128 on 2 cores, and 11,000
  # examples at 256 (52 min) reached a validation Dice of 0.87 to 0.89 on
  # Montgomery, still rising. Contours are continuous, so the smaller input
  # costs little accuracy.
  config.dataset.image_size = 128
  # Grouped convolutions are about 17x slower than dense ones on XLA:CPU.
  config.model.block = "residual"
  # About 40 minutes on 2 cores for the chest X-ray template at input 128.
  config.train.total_examples = 24_000
  # Batch size 1 as in the reference. In 1,000 examples it lowered the
  # validation Chamfer loss to 0.10, against 0.16 at batch size 4, which
  # processes 7.5 instead of 5.4 examples per second on 2 cores (input 256).
  config.train.batch_size = 1
  config.train.log_every_steps = 100
  config.train.eval_every_steps = 500
  config.train.checkpoint_every_steps = 500
  # The reference starts the rasterisation loss at T/5 of a 250,000-example
  # run, when contours already fit. At T/5 of a short run without the shape
  # prior they were still tens of pixels off, and starting the loss there
  # doubled the Chamfer loss at batch size 4, so it starts at T/2.
  config.loss.raster_start_fraction = 0.5
  # Ten times the reference rate, because the run is ten times shorter: at
  # 1e-4 the Chamfer loss fell about three times slower in a 4-image
  # overfitting check.
  config.optim.learning_rate = 1e-3
  return config
