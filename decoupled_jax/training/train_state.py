"""Explicit train state and the one train step that serves stage 1, stage 2 and normal training.

What differs between the modes is only the set of frozen leaf paths (`TrainState.frozen`):
  * the loss is differentiated with respect to the *trainable* leaves only; frozen leaves
    enter the model through `jax.lax.stop_gradient`, so XLA computes no weight gradients for
    them while gradients still flow *through* the frozen backbone's activations into the
    conditioning layers and the observation encoder;
  * the optimizer state and the EMA exist only for trainable leaves.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax

from decoupled_jax.training import ema as ema_lib
from decoupled_jax.training import partition
from decoupled_jax.training.policy import Policy, encode, make_denoise_fn


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: dict               # full nested tree {'encoder': ..., 'backbone': ...}
  opt_state: Any             # over the flat trainable dict only
  ema: dict                  # flat path -> EMA value, trainable leaves only
  frozen: frozenset = flax.struct.field(pytree_node=False)

  def trainable_params(self):
    return partition.split(self.params, self.frozen)[0]

  def inference_params(self, use_ema: bool = True) -> dict:
    """EMA weights for trainable leaves merged with the (unchanging) frozen leaves."""
    trainable, frozen = partition.split(self.params, self.frozen)
    return partition.merge(frozen, self.ema if use_ema else trainable)


def create_train_state(params: dict, frozen: frozenset, tx: optax.GradientTransformation) -> TrainState:
  trainable, _ = partition.split(params, frozen)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(trainable),
                    ema=jax.tree.map(jnp.array, trainable), frozen=frozen)


def make_loss_fn(policy: Policy, head: Any) -> Callable:
  """`loss_fn(trainable, frozen, batch, rng)`: the training loss, differentiable in the flat
  trainable dict only. Frozen *parameters* pass through `stop_gradient`; activations do not,
  so gradients reach the conditioning layers and the encoder through the frozen backbone."""

  def loss_fn(trainable, frozen, batch, rng):
    params = partition.merge(trainable, jax.lax.stop_gradient(frozen))
    crop_rng, dropout_rng, head_rng = jax.random.split(rng, 3)
    cond = encode(policy, params, batch["obs"], train=True, rngs={"crop": crop_rng})
    denoise_fn = make_denoise_fn(policy, params, cond, train=True, rng=dropout_rng)
    return head.loss(denoise_fn, batch["actions"], head_rng)

  return loss_fn


def make_train_step(policy: Policy, head: Any, tx: optax.GradientTransformation, *,
                    ema_power: float = 0.75, ema_max_decay: float = 0.9999,
                    ema_enabled: bool = True) -> Callable:
  """Builds the pure `train_step(state, batch, rng) -> (state, metrics)`.

  batch = {'obs': {key: (B, To, ...)}, 'actions': (B, H, Da)}, already normalised.
  rng is the run's base key; the step's key is fold_in(rng, state.step).
  """
  loss_fn = make_loss_fn(policy, head)

  def train_step(state: TrainState, batch, rng):
    step_rng = jax.random.fold_in(rng, state.step)
    trainable, frozen = partition.split(state.params, state.frozen)
    loss, grads = jax.value_and_grad(loss_fn)(trainable, frozen, batch, step_rng)
    new_state = apply_gradients(state, grads, tx, ema_power=ema_power,
                                ema_max_decay=ema_max_decay, ema_enabled=ema_enabled)
    metrics = {"loss": loss, "grad_norm": optax.global_norm(grads)}
    return new_state, metrics

  return train_step


def apply_gradients(state: TrainState, grads, tx: optax.GradientTransformation, *,
                    ema_power: float = 0.75, ema_max_decay: float = 0.9999,
                    ema_enabled: bool = True) -> TrainState:
  """The train step's parameter update: `tx` on the trainable leaves (grads has their
  structure), then the EMA of the updated leaves; frozen leaves are untouched."""
  trainable, frozen = partition.split(state.params, state.frozen)
  updates, opt_state = tx.update(grads, state.opt_state, trainable)
  trainable = optax.apply_updates(trainable, updates)
  if ema_enabled:
    ema = ema_lib.ema_update(state.ema, trainable, state.step, power=ema_power,
                             max_decay=ema_max_decay)
  else:
    ema = trainable
  return state.replace(step=state.step + 1, params=partition.merge(trainable, frozen),
                       opt_state=opt_state, ema=ema)
