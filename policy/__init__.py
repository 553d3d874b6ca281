"""The OpenVLA-OFT-compatible VLA policy (no Ray here)."""

# transformers / open_clip import torchvision, which needs this fix on CPU-only torch.
import cluster.compat  # noqa: F401
