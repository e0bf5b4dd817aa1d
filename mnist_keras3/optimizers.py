"""The optimizer of a run, with its learning-rate schedule, from the config (keras needed)."""

import math

import keras

from .config import ADAM_FAMILY


def steps_per_epoch(num_examples, cfg):
    steps = math.ceil(num_examples / cfg.batch_size)
    return min(steps, cfg.max_steps_per_epoch) if cfg.max_steps_per_epoch else steps


def learning_rate(cfg, total_steps):
    """cfg.lr, or a Keras schedule over all `total_steps` training steps (updated every step):
    "cosine" decays from cfg.lr to 0 along a half cosine; "onecycle" rises linearly from 0 to cfg.lr
    over the first warmup_fraction of the steps, then decays the same way (Keras's CosineDecay with
    its warm-up). The schedule is saved with the optimizer in checkpoint.keras, so --resume
    continues it."""
    if cfg.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(cfg.lr, decay_steps=total_steps)
    if cfg.lr_schedule == "onecycle":
        warmup = max(1, round(cfg.warmup_fraction * total_steps))
        return keras.optimizers.schedules.CosineDecay(0.0, decay_steps=max(1, total_steps - warmup),
                                                      warmup_target=cfg.lr, warmup_steps=warmup)
    return cfg.lr


def build_optimizer(cfg, steps):
    """cfg.optimizer at learning_rate(cfg, cfg.epochs * steps); beta_1 and beta_2 for the Adam family."""
    config = {"learning_rate": learning_rate(cfg, cfg.epochs * steps)}
    if cfg.optimizer in ADAM_FAMILY:
        config.update(beta_1=cfg.beta_1, beta_2=cfg.beta_2)
    return keras.optimizers.get({"class_name": cfg.optimizer, "config": config})
