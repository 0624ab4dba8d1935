"""The CAE is the published architecture, and PCA sizes its code."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from dfr_edge.cae import CAE, latent_dim_by_pca


def test_architecture_matches_the_paper():
    cae = CAE(272, 33)
    convs = [m for m in cae.modules() if isinstance(m, nn.Conv2d)]
    m = (272 + 2 * 33) // 2
    assert [(c.in_channels, c.out_channels) for c in convs] == [
        (272, m), (m, 66), (66, 33), (33, 66), (66, m), (m, 272)
    ]
    assert all(c.kernel_size == (1, 1) for c in convs)
    assert sum(isinstance(x, nn.BatchNorm2d) for x in cae.modules()) == 4
    assert not isinstance(cae.encoder[-1], nn.ReLU) and not isinstance(cae.decoder[-1], nn.ReLU)


def test_row_path_equals_conv_path():
    torch.manual_seed(0)
    cae = CAE(12, 3)
    cae.train()
    cae(torch.randn(8, 12, 4, 4))  # give BN non-trivial running statistics
    cae.eval()
    x = torch.randn(2, 12, 5, 5)
    rows = x.permute(0, 2, 3, 1).reshape(-1, 12)
    expected = cae(x).permute(0, 2, 3, 1).reshape(-1, 12)
    torch.testing.assert_close(cae.forward_rows(rows), expected, rtol=1e-5, atol=1e-5)


def test_pca_latent_size_finds_the_intrinsic_dimension():
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(5, 40))
    scales = np.array([10.0, 8.0, 6.0, 4.0, 3.0])
    vectors = (rng.normal(size=(2000, 5)) * scales) @ basis + 0.01 * rng.normal(size=(2000, 40))
    assert latent_dim_by_pca(vectors, 0.999) == 5
    assert latent_dim_by_pca(vectors, 0.5) < 5


def test_pca_fraction_is_validated():
    with pytest.raises(ValueError):
        latent_dim_by_pca(np.zeros((10, 3)), 1.0)
