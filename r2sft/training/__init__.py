"""Redundancy-aware SFT: objectives, collated trajectories, the Trainer, tracking and export."""

from r2sft.training.config import TrainConfig
from r2sft.training.data import MissingDataError, TrajectoryCollator, load_trajectories
from r2sft.training.registry import OBJECTIVES, Objective, register_objective
from r2sft.training.run import train
from r2sft.training.trainer import R2SFTTrainer

__all__ = [
    "OBJECTIVES",
    "MissingDataError",
    "Objective",
    "R2SFTTrainer",
    "TrainConfig",
    "TrajectoryCollator",
    "load_trajectories",
    "register_objective",
    "train",
]
