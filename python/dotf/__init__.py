"""dotf: lossless adaptive self-speculative decoding (Draft on the Fly) for Hugging Face causal LMs.

    import dotf
    m = dotf.load("smollm2-135m")
    res = m.generate(input_ids, max_new_tokens=64, strategy="dotf")
"""
import torch  # noqa: F401  (must be imported before the extension: it provides libtorch)

try:
    from . import _C
except ImportError as e:  # pragma: no cover - only on a broken install
    if "undefined symbol" in str(e):
        raise ImportError(
            f"dotf._C does not match the installed torch {torch.__version__}: it was built against another torch. "
            "Rebuild with `pip install --no-build-isolation .`") from e
    raise

from .api import GenerateResult, Model, build_info, load  # noqa: E402
from .options import STRATEGIES, Option, defaults, options  # noqa: E402

__all__ = ["load", "Model", "GenerateResult", "build_info", "options", "defaults", "Option", "STRATEGIES"]
__version__ = "0.1.0"
