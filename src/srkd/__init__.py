"""srkd: knowledge distillation for super-resolution networks, with data or without any.

The top-level namespace stays light (no torch import) so that ``srkd --help`` answers instantly;
import the sub-packages for the real API::

    from srkd.models import build_model
    from srkd.ops.imresize import imresize
    from srkd.metrics import calculate_psnr_y, calculate_ssim_y
"""

__version__ = "0.1.0"

from srkd.errors import SrkdError  # noqa: E402

__all__ = ["SrkdError", "__version__"]
