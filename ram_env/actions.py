"""Action forms: the native ``Dict`` action and the forms stable-baselines3 can emit.

Every form decodes to the same pair ``(location, label)``: a location ``(x, y)`` in ``[-1, 1]^2`` where the next
glimpse is taken, and a class label read at the last glimpse (ignored before it).

=============  ======================================================  ==========================================
form           space                                                   decoding
=============  ======================================================  ==========================================
``"dict"``     ``Dict(location=Box(-1, 1, (2,)), label=Discrete(n))``  native
``"box"``      ``Box(-1, 1, (2 + n,))``                                location = a[:2], label = argmax a[2:]
``"grid"``     ``MultiDiscrete([G, G, n])``                            location = -1 + 2 i / (G - 1) per axis
=============  ======================================================  ==========================================

``"box"`` suits continuous-action algorithms (SAC, TD3, PPO with a Gaussian policy); ``"grid"`` suits
discrete-action ones (PPO, A2C, RecurrentPPO with categorical heads). Bad actions raise :class:`ValueError` saying
what is wrong; a location must be finite and inside ``[-1, 1]`` (clip it first: SB3 clips Box actions itself).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from gymnasium import spaces

ACTION_FORMS = ("dict", "box", "grid")
_TOLERANCE = 1e-6  # float32 round-off allowed beyond [-1, 1]


@dataclass(frozen=True)
class ActionForm:
    """One of :data:`ACTION_FORMS` for a task with ``n_classes`` classes (``grid_size`` cells per axis for grid)."""

    name: str
    n_classes: int
    grid_size: int = 9

    def __post_init__(self) -> None:
        if self.name not in ACTION_FORMS:
            raise ValueError(f"unknown action_form {self.name!r}; choose one of {', '.join(ACTION_FORMS)}")
        if self.name == "grid" and self.grid_size < 2:
            raise ValueError(f"grid_size must be >= 2, got {self.grid_size}")

    def space(self) -> spaces.Space:
        if self.name == "dict":
            return spaces.Dict(
                {
                    "location": spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32),
                    "label": spaces.Discrete(self.n_classes),
                }
            )
        if self.name == "box":
            return spaces.Box(-1.0, 1.0, shape=(2 + self.n_classes,), dtype=np.float32)
        return spaces.MultiDiscrete([self.grid_size, self.grid_size, self.n_classes])

    def decode(self, action, batch: int | None = None, device: torch.device | str = "cpu", *, check: bool = True):
        """Turn an action (one, or a batch of ``batch``) into ``(location, label)`` tensors.

        :param check: raise a ``ValueError`` naming the first invalid action (one device sync); ``False`` trusts the
            caller (locations are still clamped to ``[-1, 1]``).

        :return: ``location`` float64 ``(B, 2)`` and ``label`` long ``(B,)`` on ``device``; ``B = 1`` for one action.
        """
        lead = (batch,) if batch is not None else (1,)
        scores = cells = None
        if self.name == "dict":
            if not isinstance(action, dict) or set(action) != {"location", "label"}:
                raise ValueError(
                    f"a 'dict' action must be a dict with keys 'location' and 'label', got {_describe(action)}"
                )
            location = _tensor(action["location"], device, torch.float64, "location", lead + (2,))
            label = _tensor(action["label"], device, torch.long, "label", lead)
        elif self.name == "box":
            flat = _tensor(action, device, torch.float64, "action", lead + (2 + self.n_classes,))
            location, scores = flat[:, :2], flat[:, 2:]
            label = scores.argmax(dim=1)
        else:
            cells = _tensor(action, device, torch.long, "action", lead + (3,))
            location = -1.0 + 2.0 * cells[:, :2].to(torch.float64) / (self.grid_size - 1)
            label = cells[:, 2]
        if not check:
            return location.clamp(-1.0, 1.0), label
        # One reduction and one device sync for the common, valid case; the messages are worked out only on failure.
        ok = torch.isfinite(location).all() & (location.abs() <= 1.0 + _TOLERANCE).all()
        ok &= ((label >= 0) & (label < self.n_classes)).all()
        if scores is not None:
            ok &= torch.isfinite(scores).all()
        if cells is not None:
            ok &= ((cells >= 0) & (cells < self._grid_bounds(cells.device))).all()
        if not bool(ok):
            self._raise_invalid(location, label, scores, cells)
        return location.clamp(-1.0, 1.0), label

    def class_scores(self, action, batch: int | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
        """The ``"box"`` form's class scores ``a[2:]`` as float64 ``(B, n_classes)`` (call :meth:`decode` first: it
        checks the action)."""
        if self.name != "box":
            raise ValueError(f"only the 'box' action form has class scores, not {self.name!r}")
        lead = (batch,) if batch is not None else (1,)
        return _tensor(action, device, torch.float64, "action", lead + (2 + self.n_classes,))[:, 2:]

    def _grid_bounds(self, device) -> torch.Tensor:
        return torch.tensor([self.grid_size, self.grid_size, self.n_classes], device=device)

    def _raise_invalid(self, location, label, scores, cells) -> None:
        """Raise the ``ValueError`` that names the first problem of an invalid action."""
        if scores is not None:
            _check_finite(scores, "class scores")
        if cells is not None and bool(((cells < 0) | (cells >= self._grid_bounds(cells.device))).any()):
            raise ValueError(
                f"a 'grid' action must lie in [0, {self.grid_size}) x [0, {self.grid_size}) x "
                f"[0, {self.n_classes}), got {_first(cells)}"
            )
        _check_finite(location, "location")
        if bool((location.abs() > 1.0 + _TOLERANCE).any()):
            raise ValueError(
                f"location must lie in [-1, 1]^2, got {_first(location)}; clip the action to the action space"
            )
        raise ValueError(f"label must lie in [0, {self.n_classes}), got {_first(label)}")


#: ``reward="softmax"`` reads the box form's class scores (in [-1, 1]) as logits times this: a true class scored 1
#: against nine at -1 earns 0.9996, all ten equal 0.1.
SOFTMAX_REWARD_SCALE = 5.0


def softmax_reward(scores: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """``softmax(SOFTMAX_REWARD_SCALE * scores)[label]`` per row: ``scores`` ``(B, n)``, ``label`` ``(B,)`` ->
    float32 ``(B,)``; the probability the class scores give the true class."""
    probs = torch.softmax(SOFTMAX_REWARD_SCALE * scores.to(torch.float64), dim=1)  # (B, n)
    return probs.gather(1, label.to(probs.device).long()[:, None])[:, 0].to(torch.float32)


def _describe(value) -> str:
    if isinstance(value, dict):
        return f"dict with keys {sorted(value)}"
    return type(value).__name__


def _first(t: torch.Tensor) -> str:
    bad = t.reshape(-1)[:4].tolist()
    return str(bad if t.numel() > 1 else bad[0])


def _check_finite(t: torch.Tensor, what: str) -> None:
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{what} must be finite, got {_first(t[~torch.isfinite(t).all(-1)])} (NaN or infinity)")


def _tensor(value, device, dtype, what: str, shape: tuple[int, ...]) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        t = value.to(device=device)
    else:
        try:
            t = torch.as_tensor(np.asarray(value), device=device)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{what} must be numeric, got {_describe(value)}") from err
    if t.is_floating_point() and dtype == torch.long:
        if not bool((t == t.round()).all()):
            raise ValueError(f"{what} must hold integers, got {_first(t)}")
    elif t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"{what} must be numeric, got dtype {t.dtype}")
    if t.numel() != int(np.prod(shape)):
        raise ValueError(f"{what} must have shape {shape[1:] if shape[0] == 1 else shape}, got {tuple(t.shape)}")
    return t.reshape(shape).to(dtype)
