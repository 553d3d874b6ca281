"""The VLM reflector: reward and termination from frames (model code has no Ray import)."""

# transformers / open_clip import torchvision, which needs this fix on CPU-only torch.
import core.compat  # noqa: F401
