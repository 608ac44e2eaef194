"""mamba2c: a Mamba-2 language-model engine in C with transformers' Python API."""
import os

# OpenMP threads that spin while they wait steal the core from the thread they wait for as soon
# as anything else runs on the machine (a notebook, a second model, a build): decode then runs
# several times slower. Sleeping costs microseconds per kernel on an idle machine, where a
# decode step starts about a hundred parallel loops: GNU OpenMP's threads first spin 300 times
# (a few microseconds, about the gap between two loops), then sleep. On two cores that made
# decode 12% faster idle and 4-6% slower beside a busy process (benchmarks/RESULTS.md). Read
# when the OpenMP runtime loads, so only before the extension is imported. A user's setting
# wins: GNU OpenMP takes GOMP_SPINCOUNT over the wait policy, so the spin count is set only
# with the policy, or OMP_WAIT_POLICY=ACTIVE alone would still sleep after 300 spins.
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    os.environ.setdefault("GOMP_SPINCOUNT", "300")

from . import cuda, ops  # noqa: E402
from ._C import HAS_OPENBLAS  # noqa: E402
from .cache import Mamba2Cache  # noqa: E402
from .configuration import Mamba2Config  # noqa: E402
from .modeling import Mamba2ForCausalLM, Mamba2Model, Mamba2PreTrainedModel  # noqa: E402

__version__ = "0.1.0"


def set_num_threads(n: int) -> None:
    """Threads used by the CPU kernels (and OpenBLAS); 0 means every core."""
    from . import _C

    _C.set_num_threads(int(n))


def get_num_threads() -> int:
    """Threads the CPU kernels use."""
    from . import _C

    return _C.get_num_threads()


__all__ = ["Mamba2Config", "Mamba2Model", "Mamba2ForCausalLM", "Mamba2PreTrainedModel",
           "Mamba2Cache", "ops", "set_num_threads", "get_num_threads", "HAS_OPENBLAS"]
