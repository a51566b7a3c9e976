"""The Recurrent Attention Model (Mnih et al. 2014), with modules named after the paper's boxes.

One step of the model, for a batch of ``B`` glimpses::

    rho_t, l_t  --GlimpseNetwork-->  g_t          h_g = ReLU(Linear(rho)), h_l = ReLU(Linear(l)),
                                                  g_t = ReLU(Linear(h_g) + Linear(h_l))
    g_t, h_{t-1} --CoreNetwork-->    h_t          ReLU(Linear(h_{t-1}) + Linear(g_t))  or an LSTM cell
    h_t  --LocationNetwork-->        mu_t         l_{t+1} ~ N(mu_t, sigma^2 I)  (optionally tanh(mu))
    h_t  --BaselineNetwork-->        b_t          Linear(h_t), fed a detached h_t (no gradient into the core)
    h_T  --ActionNetwork-->          class logits Linear(h_T)

The glimpse ``rho_t`` and the location ``l_t`` are the environment's observation, which carries no gradient: the
classifier's loss can never reach an earlier location decision (the bug of kevinzakka/recurrent-visual-attention #29).
Whether the REINFORCE gradient flows from the location network into the core is the explicit switch
:attr:`RAMConfig.reinforce_into_core` (off by default, as in the seed implementation and kevinzakka's code: the
location network then learns from REINFORCE alone and the core from the classifier alone).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

CORES = ("rnn", "lstm")
LOCATION_POLICIES = ("learned", "random")


@dataclass
class RAMConfig:
    """Architecture of the RAM agent (the sizes are the paper's MNIST ones)."""

    glimpse_hidden: int = 128
    """units of h_g (what) and of h_l (where)"""
    glimpse_out: int = 256
    """units of g_t"""
    hidden_size: int = 256
    """units of the core state h_t"""
    core: str = "rnn"
    """'rnn' (the paper's ReLU core) or 'lstm' (the harder tasks)"""
    location_std: float = 0.1
    """sigma of the Gaussian location policy"""
    tanh_mean: bool = True
    """squash the location mean into [-1, 1] with tanh"""
    conv_glimpse: bool = False
    """a small convolutional glimpse network instead of the linear one (colour images)"""
    reinforce_into_core: bool = False
    """let the REINFORCE gradient flow from the location network into the core"""
    location_policy: str = "learned"
    """'learned' (the Gaussian location policy, trained by REINFORCE) or 'random' (the paper's random-glimpse
    control: every next location uniform in [-1, 1]^2, no REINFORCE; only the cross-entropy trains the agent)"""

    def __post_init__(self) -> None:
        if self.core not in CORES:
            raise ValueError(f"unknown core {self.core!r}; choose one of {', '.join(CORES)}")
        if self.location_policy not in LOCATION_POLICIES:
            raise ValueError(
                f"unknown location_policy {self.location_policy!r}; choose one of {', '.join(LOCATION_POLICIES)}"
            )
        if not self.location_std > 0:
            raise ValueError(f"location_std must be > 0, got {self.location_std}")
        for name in ("glimpse_hidden", "glimpse_out", "hidden_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


class GlimpseNetwork(nn.Module):
    """``g_t = ReLU(Linear(h_g) + Linear(h_l))`` from the glimpse ``(B, k, C, g, g)`` and its location ``(B, 2)``."""

    def __init__(self, glimpse_shape: tuple[int, ...], config: RAMConfig):
        super().__init__()
        k, c, g, _ = glimpse_shape
        hidden = config.glimpse_hidden
        if config.conv_glimpse:
            # The k scales are stacked as channels: (B, k*C, g, g).
            self.what = nn.Sequential(
                nn.Conv2d(k * c, 32, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(32, 64, 3, padding=1, stride=2),
                nn.ReLU(),
                nn.Flatten(),
                nn.Linear(64 * ((g + 1) // 2) ** 2, hidden),
                nn.ReLU(),
            )
        else:
            self.what = nn.Sequential(nn.Flatten(), nn.Linear(k * c * g * g, hidden), nn.ReLU())
        self.where = nn.Sequential(nn.Linear(2, hidden), nn.ReLU())
        # Linear(h_g) + Linear(h_l) as one product over [h_g, h_l].
        self.combine = nn.Linear(2 * hidden, config.glimpse_out)
        self.conv = config.conv_glimpse

    def forward(self, glimpse: torch.Tensor, location: torch.Tensor) -> torch.Tensor:
        if self.conv:
            glimpse = glimpse.flatten(1, 2)  # (B, k, C, g, g) -> (B, k*C, g, g)
        h_g = self.what(glimpse)  # (B, hidden)
        h_l = self.where(location)  # (B, hidden)
        return torch.relu(self.combine(torch.cat([h_g, h_l], dim=1)))  # (B, glimpse_out)


class CoreNetwork(nn.Module):
    """``h_t = ReLU(Linear(h_{t-1}) + Linear(g_t))`` (``core="rnn"``) or an LSTM cell; state is a tuple."""

    def __init__(self, config: RAMConfig):
        super().__init__()
        self.kind = config.core
        self.hidden_size = config.hidden_size
        self.cell: nn.Module
        if self.kind == "rnn":
            self.cell = nn.Linear(config.glimpse_out + config.hidden_size, config.hidden_size)
        else:
            self.cell = nn.LSTMCell(config.glimpse_out, config.hidden_size)

    def initial_state(self, batch: int, device: torch.device) -> tuple[torch.Tensor, ...]:
        zeros = torch.zeros(batch, self.hidden_size, device=device)
        return (zeros,) if self.kind == "rnn" else (zeros, zeros.clone())

    def forward(self, g_t: torch.Tensor, state: tuple[torch.Tensor, ...] | None) -> tuple[torch.Tensor, ...]:
        """The next state from ``g_t`` ``(B, glimpse_out)`` and ``state``; ``None`` is the zero state of new
        episodes (:meth:`initial_state`), whose recurrent term ``Linear(h_0)`` is the bias alone: the first step then
        skips that product (half of the ReLU core's products at that step, one of the LSTM cell's two)."""
        if state is not None:
            if self.kind == "rnn":
                return (torch.relu(self.cell(torch.cat([g_t, state[0]], dim=1))),)
            return self.cell(g_t, state)
        if self.kind == "rnn":
            linear = cast(nn.Linear, self.cell)
            weight_g = linear.weight[:, : g_t.shape[1]]  # (hidden, glimpse_out): the columns that read g_t
            return (torch.relu(F.linear(g_t, weight_g, linear.bias)),)
        cell = cast(nn.LSTMCell, self.cell)
        gates = F.linear(g_t, cell.weight_ih, cell.bias_ih) + cell.bias_hh  # (B, 4 hidden), gates i, f, g, o
        i, _, g, o = gates.chunk(4, dim=1)  # the forget gate multiplies c_0 = 0
        c = torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class LocationNetwork(nn.Module):
    """Mean ``mu_t = Linear(h_t)`` (tanh-squashed if asked) of the Gaussian over the next location."""

    def __init__(self, config: RAMConfig):
        super().__init__()
        self.fc = nn.Linear(config.hidden_size, 2)
        self.tanh = config.tanh_mean
        self.std = config.location_std

    def forward(self, h_t: torch.Tensor) -> torch.Tensor:
        mu = self.fc(h_t)
        return torch.tanh(mu) if self.tanh else mu


class ActionNetwork(nn.Module):
    """Class logits ``Linear(h_T)`` (the softmax is in the loss)."""

    def __init__(self, config: RAMConfig, n_classes: int):
        super().__init__()
        self.fc = nn.Linear(config.hidden_size, n_classes)

    def forward(self, h_t: torch.Tensor) -> torch.Tensor:
        return self.fc(h_t)


class BaselineNetwork(nn.Module):
    """``b_t = Linear(h_t)``: the expected reward, a variance-reducing baseline for REINFORCE."""

    def __init__(self, config: RAMConfig):
        super().__init__()
        self.fc = nn.Linear(config.hidden_size, 1)

    def forward(self, h_t: torch.Tensor) -> torch.Tensor:
        return self.fc(h_t).squeeze(-1)


class RecurrentAttentionModel(nn.Module):
    """The whole agent: glimpse, core, location, action and baseline networks.

    :param glimpse_shape: ``(k, C, g, g)``, the environment's glimpse observation.
    :param n_classes: number of classes.
    :param config: the architecture.
    """

    def __init__(self, glimpse_shape: tuple[int, ...], n_classes: int, config: RAMConfig | None = None):
        super().__init__()
        self.config = config or RAMConfig()
        self.glimpse_shape = tuple(int(v) for v in glimpse_shape)
        self.n_classes = int(n_classes)
        self.glimpse_net = GlimpseNetwork(self.glimpse_shape, self.config)
        self.core = CoreNetwork(self.config)
        self.location_net = LocationNetwork(self.config)
        self.action_net = ActionNetwork(self.config, self.n_classes)
        self.baseline_net = BaselineNetwork(self.config)

    def model_args(self) -> dict:
        """Everything needed to rebuild this model: ``RecurrentAttentionModel(**model_args())``... with the config."""
        return {
            "glimpse_shape": list(self.glimpse_shape),
            "n_classes": self.n_classes,
            "config": dataclasses.asdict(self.config),
        }

    @classmethod
    def from_args(cls, args: dict) -> RecurrentAttentionModel:
        return cls(tuple(args["glimpse_shape"]), args["n_classes"], RAMConfig(**args["config"]))

    def initial_state(self, batch: int, device: torch.device) -> tuple[torch.Tensor, ...]:
        return self.core.initial_state(batch, device)

    #: Action form :meth:`predict` answers in: ``"box"`` (location, then class probabilities) or ``"grid"``.
    predict_action_form: str = "box"
    #: Cells per axis when :attr:`predict_action_form` is ``"grid"``.
    predict_grid_size: int = 9

    @torch.no_grad()
    def predict(
        self,
        observation: dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        """stable-baselines3's policy interface, so ``evaluate_policy(model, venv)`` can score the agent.

        :param observation: a batch of glimpse observations (numpy dict: ``glimpse`` (n, k, C, g, g), ``location``
            (n, 2)), e.g. from :class:`ram_env.sb3.SB3VecEnvAdapter` with ``observation_form="glimpse"``.
        :param state: the core state returned by the previous call (``None`` at the start).
        :param episode_start: ``(n,)`` bool; the core state of these environments is reset.
        :param deterministic: next location at the policy's mean instead of a sample.
        :return: actions in :attr:`predict_action_form` (every step names a class; the environment reads it at the
            last glimpse) and the new core state.
        """
        device = next(self.parameters()).device
        glimpse = torch.as_tensor(np.asarray(observation["glimpse"]), dtype=torch.float32, device=device)
        location = torch.as_tensor(np.asarray(observation["location"]), dtype=torch.float32, device=device)
        n = glimpse.shape[0]
        if state is None:
            core_state = self.initial_state(n, device)
        else:
            core_state = tuple(torch.as_tensor(s, dtype=torch.float32, device=device) for s in state)
        if episode_start is not None:
            keep = ~torch.as_tensor(np.asarray(episode_start), dtype=torch.bool, device=device)
            core_state = tuple(s * keep[:, None] for s in core_state)
        h_t, core_state = self.step(glimpse, location, core_state)
        _, l_next = self.next_location(h_t, deterministic=deterministic)  # noise from torch's global generator
        l_next = l_next.clamp(-1.0, 1.0)
        probs = torch.softmax(self.classify(h_t), dim=1)  # (n, n_classes), inside the box's [-1, 1]
        if self.predict_action_form == "grid":
            cells = torch.round((l_next + 1.0) / 2.0 * (self.predict_grid_size - 1)).long()
            action = torch.cat([cells, probs.argmax(dim=1, keepdim=True)], dim=1)  # (n, 3)
        else:
            action = torch.cat([l_next, probs], dim=1)  # (n, 2 + n_classes)
        return action.cpu().numpy(), tuple(s.cpu().numpy() for s in core_state)

    def step(
        self, glimpse: torch.Tensor, location: torch.Tensor, state: tuple[torch.Tensor, ...] | None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """One glimpse: returns ``h_t`` ``(B, hidden)`` and the new core state (``state=None``: new episodes, the
        zero state, computed with fewer products; see :meth:`CoreNetwork.forward`)."""
        g_t = self.glimpse_net(glimpse, location)
        state = self.core(g_t, state)
        return state[0], state

    def location_mean(self, h_t: torch.Tensor) -> torch.Tensor:
        """``mu_t`` ``(B, 2)``; the core's gradient is cut here unless ``reinforce_into_core``."""
        return self.location_net(h_t if self.config.reinforce_into_core else h_t.detach())

    def next_location(
        self, h_t: torch.Tensor, *, deterministic: bool = False, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The location policy's decision: ``mu_t`` ``(B, 2)`` (with gradient, for REINFORCE) and the chosen
        ``l_{t+1}`` ``(B, 2)``: ``mu_t`` itself when ``deterministic``, else ``mu_t + sigma * N(0, I)`` drawn from
        ``generator``. The chosen location carries no gradient (the environment returns it as an observation). With
        ``location_policy="random"`` both are one uniform sample in [-1, 1]^2 (also when ``deterministic``)."""
        if self.config.location_policy == "random":  # the paper's control: uniform in [-1, 1]^2, no mode, no gradient
            uniform = torch.rand(h_t.shape[0], 2, device=h_t.device, generator=generator) * 2.0 - 1.0  # (B, 2)
            return uniform, uniform
        mu = self.location_mean(h_t)
        l_next = mu.detach()
        if not deterministic:
            noise = torch.randn(l_next.shape, device=l_next.device, generator=generator)  # (B, 2)
            l_next = l_next + self.config.location_std * noise
        return mu, l_next

    def baseline(self, h_t: torch.Tensor) -> torch.Tensor:
        """``b_t`` ``(..., )``; never sends gradient into the core."""
        return self.baseline_net(h_t.detach())

    def classify(self, h_t: torch.Tensor) -> torch.Tensor:
        return self.action_net(h_t)
