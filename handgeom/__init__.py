"""handgeom: fused, differentiable geometry kernels for 3D hand reconstruction.

Importing the package loads the compiled extension, which registers the ``torch.ops.handgeom``
operators; :mod:`handgeom.ops` gives them their Python face (docstrings, autograd, fake tensors
for ``torch.compile``).
"""

import torch  # loads libtorch before the extension that links against it

from handgeom import _C, losses, metrics, models, ops

__version__: str = _C.build_info()["version"]


def build_info() -> dict:
    """How this build was compiled, and what the running process sees.

    Keys: ``version``; ``torch_built_against`` and ``torch_runtime`` (they must match);
    ``cuda`` (were CUDA kernels compiled) and ``cuda_archs``; ``openmp``; ``cuda_available``
    (a GPU is visible now); ``threads`` (torch's intra-op threads, which handgeom's CPU kernels
    use).
    """
    info = dict(_C.build_info())
    info["torch_runtime"] = torch.__version__
    info["cuda_available"] = torch.cuda.is_available()
    info["threads"] = torch.get_num_threads()
    return info


__all__ = ["build_info", "losses", "metrics", "models", "ops", "__version__"]
