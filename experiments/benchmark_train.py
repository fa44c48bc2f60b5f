"""Train-step speed, compile time and memory for a config, on this machine.

Measures, in one process and one run so that the ratios share the machine's
state. It reports the compile time of the jitted train step and the median
step time with the rasterisation loss off and on (before and after
`loss.raster_start_fraction * T`), with examples per second. It also
reports the compiled step's temporary memory from XLA and the process's
peak resident memory. Synthetic inputs of the config's
shapes are used, so no dataset is needed; a dataset folder only sets the node
counts (`--manual_dir`), else the chest X-ray template is built from fixed
boundary lengths.

With `--breakdown` it also times parts of the step, each jitted alone on
the same batch:

- the encoder's forward and backward pass (gradient of its outputs with
  respect to its parameters), so that `1 - encoder / step` is the share of
  the step spent outside the encoder: graph decoder, losses, rasteriser,
  augmentation and optimizer;
- the model's forward and backward pass through the loss, raster loss off
  and on, without augmentation or optimizer; `(model and loss - encoder) /
  step` is the share spent in the graph decoder, the losses and the
  rasteriser;
- the on-device augmentation, and the optimizer update with the step's
  gradient, parameter and update norms.

Parts jitted alone are not fused with their neighbours, so their times need
not add up to the step's. It also counts the traces of a jitted train step
called once in each raster phase, and of the evaluation step over
`--eval_batches` batches of one shape. With `--compare_dtypes` it also
times the raster-off step with the encoder computing in bfloat16.

Every timed function (the step in both raster phases, the parts, the
bfloat16 step) is called in turn, one call of each per round for `--steps`
rounds, so that load changes of a shared machine reach them all alike.
Each figure is the median of its calls.

  python experiments/benchmark_train.py --config configs/montgomery.py \
      --steps 20 --breakdown --compare_dtypes --output /tmp/benchmark_train.json
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bench_common import environment, interleaved_medians, temp_mib, write_json


def _synthetic_batch(config, template, points_budget: int, seed: int = 0) -> dict:
  """Build a batch of the config's shapes: ellipse contours with their filled masks."""
  from mask_hybridgnet_jax.contours import fill_polygon

  rng = np.random.default_rng(seed)
  size = config.dataset.image_size
  batch_size = config.train.batch_size
  num_organs = len(template.organ_names)
  image = rng.random((batch_size, size, size, 1), dtype=np.float32)
  masks = np.zeros((batch_size, num_organs, size, size), np.float32)
  points = np.zeros((batch_size, num_organs, points_budget, 2), np.float32)
  lengths = np.zeros((batch_size, num_organs), np.int32)
  angles = np.linspace(0, 2 * np.pi, points_budget // 2, endpoint=False)
  for b in range(batch_size):
    for o in range(num_organs):
      centre = np.array([(o + 1) / (num_organs + 1), 0.5]) + rng.normal(0, 0.02, 2)
      radii = np.array([0.12, 0.3]) * rng.uniform(0.9, 1.1, 2)
      contour = centre + radii * np.stack([np.cos(angles), np.sin(angles)], -1)
      points[b, o, :len(contour)] = contour
      lengths[b, o] = len(contour)
      masks[b, o] = fill_polygon(contour * size, (size, size))
  return {
      "image": image, "masks": masks, "points": points, "lengths": lengths,
      "present": lengths > 0, "valid": np.ones((batch_size,), bool),
  }


def _encoder_call(model, params, images):
  """Return a call of the encoder's forward and backward pass alone, compiled."""
  from mask_hybridgnet_jax.models.encoder import Encoder

  encoder = Encoder(block=model.block, filters=model.filters, latent_dim=model.latent_dim,
                    norm=model.norm, dtype=model.dtype, log_var_clip=model.log_var_clip)

  def objective(params):
    mu, log_var, features = encoder.apply({"params": params}, images, train=True)
    # A scalar that depends on every output, so nothing is pruned.
    return jnp.sum(mu) + jnp.sum(log_var) + sum(jnp.mean(f) for f in features)

  compiled = jax.jit(jax.value_and_grad(objective)).lower(params).compile()
  return lambda: compiled(params)


def _part_calls(model, template, config, metadata, state, batch) -> dict:
  """Return compiled calls of the step's parts other than the encoder, each jitted alone."""
  from mask_hybridgnet_jax.augment import augment_batch
  from mask_hybridgnet_jax.losses.objective import compute_loss
  from mask_hybridgnet_jax.losses.schedules import loss_weights

  rng = jax.random.PRNGKey(0)
  augment = jax.jit(lambda rng, batch: augment_batch(
      rng, batch, config.augment, allow_horizontal_flip=metadata.allow_horizontal_flip,
      allow_vertical_flip=metadata.allow_vertical_flip,
      allow_transpose=metadata.allow_transpose)).lower(rng, batch).compile()
  calls = {"augmentation": lambda: augment(rng, batch)}

  def loss_fn(params, weights):
    positions, aux = model.apply({"params": params}, batch["image"], train=True,
                                 rngs={"latent": rng})
    return compute_loss(positions, aux, batch, template, weights, config.loss)[0]

  grad_fn = jax.jit(jax.value_and_grad(loss_fn))
  total = config.train.total_examples
  for phase, examples_seen in (("off", 0), ("on", total - 1)):
    weights = loss_weights(examples_seen, total, config.loss)
    compiled = grad_fn.lower(state.params, weights).compile()
    calls[f"model_and_loss_raster_{phase}"] = (
        lambda compiled=compiled, weights=weights: compiled(state.params, weights))
  # Gradients of the raster-on phase, from the function compiled last.
  _, grads = compiled(state.params, weights)

  def update(state, grads):
    new_state = state.apply_gradients(grads=grads)
    norms = (optax.tree.norm(grads), optax.tree.norm(new_state.params),
             optax.tree.norm(jax.tree.map(jnp.subtract, new_state.params, state.params)))
    return new_state, norms

  compiled_update = jax.jit(update).lower(state, grads).compile()
  calls["optimizer_and_norms"] = lambda: compiled_update(state, grads)
  return calls


def _trace_count(function, argument_tuples) -> int:
  """Jit `function`, call it once with each argument tuple and return how often it was traced."""
  traces = {"count": 0}

  def counted(*args):
    traces["count"] += 1
    return function(*args)

  jitted = jax.jit(counted)
  for args in argument_tuples:
    jax.block_until_ready(jitted(*args))
  return traces["count"]


def run(config_path: str, steps: int, manual_dir: str | None, breakdown: bool = False,
        compare_dtypes: bool = False, eval_batches: int = 3,
        overrides: tuple[str, ...] = ()) -> dict:
  from mask_hybridgnet_jax.config_utils import apply_overrides, load_config_file
  from mask_hybridgnet_jax.models.hybridgnet import build_model
  from mask_hybridgnet_jax.organs import DatasetMetadata, Organ
  from mask_hybridgnet_jax.topology import GraphTemplate
  from mask_hybridgnet_jax.train.state import create_train_state
  from mask_hybridgnet_jax.train.step import make_eval_step, make_train_step

  config = load_config_file(config_path)
  apply_overrides(config, overrides)
  if manual_dir:
    from mask_hybridgnet_jax.train.loop import build_experiment
    config.dataset.manual_dir = manual_dir
    experiment = build_experiment(config, "/tmp/benchmark_train_workdir")
    template, metadata = experiment.template, experiment.metadata
    points_budget = experiment.stats["points_budget"]
  else:
    metadata = DatasetMetadata(organs=(Organ("right_lung", 1), Organ("left_lung", 2)))
    # Mean boundary lengths of the Montgomery training split at 512 x 512.
    template = GraphTemplate.from_boundary_lengths(
        metadata, {"right_lung": 878.0, "left_lung": 866.0},
        scale=config.graph.scale_factor, num_levels=config.graph.num_levels)
    points_budget = 1152
  model = build_model(config.model, template)
  batch = jax.device_put(_synthetic_batch(config, template, points_budget))
  state = create_train_state(model, config, jax.random.PRNGKey(0))
  # An int32 array from the start, so that both raster phases match the compiled signature.
  state = state.replace(step=jnp.asarray(state.step, jnp.int32))
  # The step donates its input state; the parts and the evaluation read this copy.
  reference = jax.tree.map(jnp.copy, state)
  step_fn = make_train_step(model, template, config, metadata)
  jitted = jax.jit(step_fn, donate_argnums=(0,))

  start = time.perf_counter()
  compiled = jitted.lower(state, batch).compile()
  compile_seconds = time.perf_counter() - start

  # Raster off: steps before the raster start. Raster on: a state whose step
  # counter is past it. One compiled executable runs both raster phases: the
  # raster switch is a traced value, so it cannot cause a second compilation.
  raster_start = int(np.ceil(config.train.total_examples * config.loss.raster_start_fraction
                             / config.train.batch_size)) + 1
  states = {"off": state, "on": jax.tree.map(jnp.copy, state).replace(
      step=jnp.asarray(raster_start, jnp.int32))}

  def step_call(step, phase):
    def call():
      states[phase], metrics = step(states[phase], batch)
      return metrics
    return call

  calls = {"step_raster_off": step_call(compiled, "off"),
           "step_raster_on": step_call(compiled, "on")}
  extra = {}
  if breakdown:
    calls["encoder"] = _encoder_call(model, reference.params["encoder"], batch["image"])
    calls.update(_part_calls(model, template, config, metadata, reference, batch))
  if compare_dtypes:
    bf16_config = config.copy_and_resolve_references()
    bf16_config.model.dtype = "bfloat16"
    bf16_model = build_model(bf16_config.model, template)
    states["bfloat16"] = create_train_state(bf16_model, bf16_config, jax.random.PRNGKey(0))
    bf16_step = jax.jit(make_train_step(bf16_model, template, bf16_config, metadata),
                        donate_argnums=(0,))
    start = time.perf_counter()
    bf16_compiled = bf16_step.lower(states["bfloat16"], batch).compile()
    extra["bfloat16_compile_seconds"] = round(time.perf_counter() - start, 2)
    calls["bfloat16_step_raster_off"] = step_call(bf16_compiled, "bfloat16")

  medians = interleaved_medians(calls, steps)
  off_median, on_median = medians["step_raster_off"], medians["step_raster_on"]
  if breakdown:
    encoder_seconds = medians["encoder"]
    extra.update({
        "encoder_fwd_bwd_seconds": round(encoder_seconds, 4),
        "share_outside_encoder_raster_off": round(1 - encoder_seconds / off_median, 3),
        "share_outside_encoder_raster_on": round(1 - encoder_seconds / on_median, 3),
        "augmentation_seconds": round(medians["augmentation"], 4),
        "optimizer_and_norms_seconds": round(medians["optimizer_and_norms"], 4),
    })
    for phase, median in (("off", off_median), ("on", on_median)):
      model_and_loss = medians[f"model_and_loss_raster_{phase}"]
      extra[f"model_and_loss_seconds_raster_{phase}"] = round(model_and_loss, 4)
      extra[f"share_decoder_losses_raster_{phase}"] = round(
          (model_and_loss - encoder_seconds) / median, 3)
    raster_on = reference.replace(step=jnp.asarray(raster_start, jnp.int32))
    extra.update({
        "train_step_traces_both_raster_phases": _trace_count(
            step_fn, [(reference, batch), (raster_on, batch)]),
        "eval_step_traces": _trace_count(
            make_eval_step(model, template),
            [({"params": reference.params}, batch)] * eval_batches),
        "eval_batches": eval_batches,
    })
  if compare_dtypes:
    bf16_median = medians["bfloat16_step_raster_off"]
    extra.update({
        "bfloat16_step_seconds_raster_off": round(bf16_median, 4),
        "bfloat16_over_float32_raster_off": round(bf16_median / off_median, 3),
    })
  peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  batch_size = config.train.batch_size
  return {
      "config": config_path,
      "overrides": list(overrides),
      "image_size": config.dataset.image_size,
      "batch_size": batch_size,
      "block": config.model.block,
      "node_counts": list(template.node_counts),
      "compile_seconds": round(compile_seconds, 2),
      "step_seconds_raster_off": round(off_median, 4),
      "step_seconds_raster_on": round(on_median, 4),
      "raster_on_over_off": round(on_median / off_median, 3),
      "examples_per_second_raster_off": round(batch_size / off_median, 2),
      "examples_per_second_raster_on": round(batch_size / on_median, 2),
      "compiled_temp_mib": temp_mib(compiled, 1),
      "peak_rss_mib": round(peak_rss_mib, 1),
      "steps_timed": steps,
      **environment(),
      **extra,
  }


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default="configs/montgomery.py")
  parser.add_argument("--steps", type=int, default=20,
                      help="timing rounds: timed calls of the step and of each part")
  parser.add_argument("--manual_dir", default=None,
                      help="dataset folder to take node counts from (optional)")
  parser.add_argument("--output", default=None, help="JSON file for the results")
  parser.add_argument("--breakdown", action="store_true",
                      help="also time the encoder alone and count evaluation traces")
  parser.add_argument("--compare_dtypes", action="store_true",
                      help="also time the raster-off step with a bfloat16 encoder")
  parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                      help="config key to change, e.g. model.propagation=dense (repeatable)")
  parser.add_argument("--eval_batches", type=int, default=3,
                      help="evaluation batches whose traces --breakdown counts")
  args = parser.parse_args(argv)
  result = run(args.config, args.steps, args.manual_dir, breakdown=args.breakdown,
               compare_dtypes=args.compare_dtypes, eval_batches=args.eval_batches,
               overrides=tuple(args.override))
  text = json.dumps(result, indent=2)
  print(text)
  if args.output:
    write_json(args.output, result)
  return 0


if __name__ == "__main__":
  sys.exit(main())
