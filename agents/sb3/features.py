"""The paper's glimpse network as a stable-baselines3 features extractor (both observation forms)."""

from __future__ import annotations

from typing import cast

import numpy as np
import torch
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn


class GlimpseFeaturesExtractor(BaseFeaturesExtractor):
    """The paper's glimpse network as an SB3 features extractor, for both observation forms.

    ``h_g = ReLU(Linear(rho))``, ``h_l = ReLU(Linear(l))``, ``g_t = ReLU(Linear([h_g, h_l]))`` (one product over the
    concatenation is ``Linear(h_g) + Linear(h_l)``).

    * ``"glimpse"`` form (``glimpse``, ``location``, ``t``): the features are ``g_t`` (``glimpse_out`` values); ``t``
      is not used, as in the paper (the recurrent core keeps time).
    * ``"history"`` form (``glimpses`` ``(T, k, C, g, g)``, ``locations`` ``(T, 2)``, ``t``): the same network is
      applied to every time slot; slots after ``t`` (glimpses not taken yet) are zeroed, and the ``T`` vectors are
      flattened in slot order (the slot position is the time embedding) and followed by the one-hot ``t``:
      ``T * glimpse_out + T`` features.

    :param observation_space: a ``Dict`` of either form.
    :param glimpse_hidden: units of ``h_g`` and ``h_l`` (128 in the paper).
    :param glimpse_out: units of ``g_t`` (256 in the paper).
    """

    def __init__(self, observation_space: spaces.Dict, glimpse_hidden: int = 128, glimpse_out: int = 256):
        self.history = "glimpses" in observation_space.spaces
        steps = int(cast(spaces.Discrete, observation_space["t"]).n)
        shape = cast(spaces.Box, observation_space["glimpses" if self.history else "glimpse"]).shape
        glimpse_shape = shape[1:] if self.history else shape  # (k, C, g, g)
        super().__init__(observation_space, steps * glimpse_out + steps if self.history else glimpse_out)
        self.what = nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(glimpse_shape)), glimpse_hidden), nn.ReLU())
        self.where = nn.Sequential(nn.Linear(2, glimpse_hidden), nn.ReLU())
        self.combine = nn.Linear(2 * glimpse_hidden, glimpse_out)

    def glimpse_network(self, glimpse: torch.Tensor, location: torch.Tensor) -> torch.Tensor:
        """``g_t`` ``(B, glimpse_out)`` from glimpses ``(B, k, C, g, g)`` and locations ``(B, 2)``."""
        return torch.relu(self.combine(torch.cat([self.what(glimpse), self.where(location)], dim=1)))

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        if not self.history:
            return self.glimpse_network(observations["glimpse"], observations["location"])
        glimpses = observations["glimpses"]  # (B, T, k, C, g, g)
        batch, steps = glimpses.shape[:2]
        t_onehot = observations["t"].reshape(batch, steps)  # (B, T), one-hot by SB3's preprocessing
        taken = t_onehot.flip(1).cumsum(1).flip(1).flatten() > 0.5  # (B * T,): slots 0..t of each row
        # The glimpse network runs on the slots taken only; the others stay zero.
        g = glimpses.new_zeros(batch * steps, self.combine.out_features)  # (B * T, D)
        g[taken] = self.glimpse_network(glimpses.flatten(0, 1)[taken], observations["locations"].flatten(0, 1)[taken])
        return torch.cat([g.reshape(batch, -1), t_onehot], dim=1)  # (B, T * D + T)
