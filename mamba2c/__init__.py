"""mamba2c: a Mamba-2 language-model engine in C with transformers' Python API."""
from . import ops
from ._C import HAS_OPENBLAS
from .cache import Mamba2Cache
from .configuration import Mamba2Config
from .modeling import Mamba2ForCausalLM, Mamba2Model, Mamba2PreTrainedModel

__version__ = "0.1.0"


def set_num_threads(n: int) -> None:
    """Threads used by the CPU kernels (and OpenBLAS); 0 means every core."""
    from . import _C

    _C.set_num_threads(int(n))


def get_num_threads() -> int:
    from . import _C

    return _C.get_num_threads()


__all__ = ["Mamba2Config", "Mamba2Model", "Mamba2ForCausalLM", "Mamba2PreTrainedModel",
           "Mamba2Cache", "ops", "set_num_threads", "get_num_threads", "HAS_OPENBLAS"]
