"""The OpenVLA-OFT-compatible VLA policy (no Ray here)."""

# transformers / open_clip import torchvision, which needs this fix on CPU-only torch.
import core.compat  # noqa: F401
