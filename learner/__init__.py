"""LOOP learner: RLOO advantages, PPO-clip on Laplace log-probs, AdamW on LoRA and heads."""

from learner.batch import TrajectoryBatch
from learner.config import LearnerConfig
from learner.learner import Learner, TrainablePolicy

__all__ = ["Learner", "LearnerConfig", "TrainablePolicy", "TrajectoryBatch"]
