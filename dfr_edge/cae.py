"""The convolutional autoencoder of DFR and the PCA rule that sizes its latent code.

All convolutions are 1x1, so the CAE is a per-position MLP over the C feature channels:
encoder C→m, BN, ReLU, m→2d, BN, ReLU, 2d→d; decoder d→2d, BN, ReLU, 2d→m, BN, ReLU, m→C with
m = (C + 2d) // 2, no activation on the code or the output, PyTorch default init.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.decomposition import PCA
from torch import nn


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class CAE(nn.Module):
    def __init__(self, channels: int, latent: int):
        super().__init__()
        mid = (channels + 2 * latent) // 2
        self.channels, self.latent = channels, latent
        self.encoder = nn.Sequential(
            *_conv_bn_relu(channels, mid), *_conv_bn_relu(mid, 2 * latent), nn.Conv2d(2 * latent, latent, 1)
        )
        self.decoder = nn.Sequential(
            *_conv_bn_relu(latent, 2 * latent), *_conv_bn_relu(2 * latent, mid), nn.Conv2d(mid, channels, 1)
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(features))

    def forward_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """The same network on B x C feature vectors; about 2x faster to train than 1x1 convs."""
        x = rows
        for layer in (*self.encoder, *self.decoder):
            if isinstance(layer, nn.Conv2d):
                x = F.linear(x, layer.weight.flatten(1), layer.bias)
            elif isinstance(layer, nn.BatchNorm2d):
                x = F.batch_norm(
                    x, layer.running_mean, layer.running_var, layer.weight, layer.bias,
                    layer.training, layer.momentum, layer.eps,
                )
            else:
                x = layer(x)
        return x


def latent_dim_by_pca(vectors: np.ndarray, explained: float = 0.9) -> int:
    """Number of principal components that explain `explained` of the variance of the rows."""
    if not 0.0 < explained < 1.0:
        raise ValueError(f"explained variance fraction must be in (0, 1), got {explained}")
    vectors = np.asarray(vectors, dtype=np.float32)
    # Many positions, fewer channels (the usual case): eigen-decompose the C x C covariance.
    solver = "covariance_eigh" if vectors.shape[0] >= vectors.shape[1] else "full"
    pca = PCA(n_components=explained, svd_solver=solver)
    pca.fit(vectors)
    return int(pca.n_components_)
