"""The optimizer of a run, with its learning-rate schedule, from the config (keras needed)."""

import math

import keras


def steps_per_epoch(num_examples, cfg):
    steps = math.ceil(num_examples / cfg.batch_size)
    return min(steps, cfg.max_steps_per_epoch) if cfg.max_steps_per_epoch else steps


def build_optimizer(cfg, steps):
    """cfg.optimizer at cfg.lr; with lr_schedule = "cosine" the rate decays from cfg.lr to 0
    along a half cosine over all `cfg.epochs * steps` training steps (updated every step).

    The schedule is saved with the optimizer in checkpoint.keras, so --resume continues it.
    """
    lr = cfg.lr
    if cfg.lr_schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(cfg.lr, decay_steps=cfg.epochs * steps)
    return keras.optimizers.get({"class_name": cfg.optimizer, "config": {"learning_rate": lr}})
