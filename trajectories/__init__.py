"""Episodes and steps: Arrow schema, Parquet store, datasets (no Ray here)."""

from trajectories.episode import Episode
from trajectories.store import EpisodeStore, StoreBuilder, write_episodes

__all__ = ["Episode", "EpisodeStore", "StoreBuilder", "write_episodes"]
