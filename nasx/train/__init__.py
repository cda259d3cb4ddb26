"""Training detectors: the loop, optimiser recipe and checkpoints."""
from nasx.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from nasx.train.loop import DivergenceError, TrainConfig, move_batch, train
from nasx.train.optim import OPTIMIZER_DEFAULTS, build_optimizer, build_sgd, param_groups, warmup_cosine

__all__ = ["TrainConfig", "train", "move_batch", "DivergenceError", "OPTIMIZER_DEFAULTS", "build_optimizer", "build_sgd", "param_groups",
           "warmup_cosine", "save_checkpoint", "load_checkpoint", "CheckpointError"]
