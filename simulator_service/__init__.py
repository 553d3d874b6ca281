"""The action-conditioned diffusion world simulator (model code has no Ray import)."""

# transformers / open_clip import torchvision, which needs this fix on CPU-only torch.
import core.compat  # noqa: F401
