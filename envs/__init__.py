"""Real environments behind one interface (no Ray here): tabletop (built in) and LIBERO."""

from envs.base import Camera, Env, Observation, StepResult

__all__ = ["Camera", "Env", "Observation", "StepResult"]
