import os
import sys
import zlib

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))  # tests import the float64 references directly

TINY = dict(vocab_size=61, hidden_size=16, num_hidden_layers=2, num_heads=8, head_dim=4,
            state_size=6, n_groups=2, conv_kernel=4, chunk_size=8, expand=2)


def tiny_config_kwargs(**overrides):
    kwargs = dict(TINY)
    kwargs.update(overrides)
    return kwargs


def randomize_torch_model(model, seed):
    """Fresh random values in every parameter (norm weights, D and biases included) so that no
    term of the forward is hidden by a one or a zero."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("A_log"):
                p.copy_(torch.rand(p.shape, generator=gen) * 2 - 1)
            elif name.endswith("dt_bias"):
                p.copy_(torch.rand(p.shape, generator=gen) * 3 - 3)
            elif "norm" in name or name.endswith(".D"):
                p.copy_(1 + 0.5 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
    return model


def torch_state_dict_as_numpy(model):
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}


def rel_err(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), 1e-30))


def rms_rel_err(got, want):
    """The error's norm over the reference's: for 16-bit results, where the largest single
    error of one random model is a noisy sample."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.linalg.norm(got - want) / max(float(np.linalg.norm(want)), 1e-30))


@pytest.fixture
def rng(request):
    """A generator seeded by the test's name: different data per test, reproducible runs."""
    return np.random.default_rng(zlib.crc32(request.node.name.encode()))
