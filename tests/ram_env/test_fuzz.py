"""Fuzzing (issue 6): the two glimpse sensors agree on arbitrary input, and no action can crash or corrupt an env.

* :func:`glimpse_numpy` and :func:`glimpse_torch` agree to 1e-6 for any image size, channel count, sensor geometry and
  finite location (however far outside the image), and their outputs are finite and in ``[0, 1]``.
* ``step`` of the single and the vector environment, in all three action forms, either accepts an action or raises
  :class:`ValueError` with a message; a rejected action leaves the episode where it was (the env still steps with a
  valid action and the episode keeps its length).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ram_env.actions import ACTION_FORMS
from ram_env.envs import GlimpseEnv
from ram_env.sensor import glimpse_numpy, glimpse_torch
from ram_env.vector import GlimpseVectorEnv

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TINY = {"dataset": "tiny", "glimpses": 3, "glimpse_size": 4, "num_scales": 2, "canvas_size": 24}
N_CLASSES = 4  # of the tiny data set
GRID = 5
N_ENVS = 3

# ---------------------------------------------------------------------------------------------------- the sensor

finite = st.floats(allow_nan=False, allow_infinity=False)
location = st.one_of(finite, st.floats(-3.0, 3.0))  # anything finite, and often near the image


@st.composite
def sensor_case(draw):
    channels = draw(st.sampled_from([1, 3]))
    height, width = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    dtype = draw(st.sampled_from([np.uint8, np.float32]))
    elements = st.integers(0, 255) if dtype is np.uint8 else st.floats(0.0, 1.0, width=32)
    image = draw(hnp.arrays(dtype, (channels, height, width), elements=elements))
    geometry = {
        "glimpse_size": draw(st.integers(1, 8)),
        "num_scales": draw(st.integers(1, 4)),
        "scale": draw(st.integers(1, 3)),
    }
    locations = draw(st.lists(st.tuples(location, location), min_size=1, max_size=3))
    return image, np.array(locations, dtype=np.float64), geometry


@FUZZ
@given(sensor_case())
def test_numpy_and_torch_glimpses_agree_and_stay_in_unit_range(case):
    image, locations, geometry = case
    batch = torch.from_numpy(np.repeat(image[None], len(locations), axis=0))
    got = glimpse_torch(batch, torch.from_numpy(locations), **geometry).numpy()
    for b, loc in enumerate(locations):
        want = glimpse_numpy(image, loc, **geometry)
        assert got[b].shape == want.shape == (geometry["num_scales"], image.shape[0]) + (geometry["glimpse_size"],) * 2
        np.testing.assert_allclose(got[b], want, rtol=0, atol=1e-6, err_msg=f"location {loc}")
    for out in (got, want):
        assert out.dtype == np.float32
        assert np.isfinite(out).all()
        assert out.min() >= 0.0 and out.max() <= 1.0


# ------------------------------------------------------------------------------------------------ env actions


@functools.cache
def _single(form: str) -> GlimpseEnv:
    return GlimpseEnv(**TINY, action_form=form, grid_size=GRID)


@functools.cache
def _vector(form: str) -> GlimpseVectorEnv:
    return GlimpseVectorEnv(N_ENVS, **TINY, action_form=form, grid_size=GRID)


numbers = st.one_of(
    st.floats(),  # NaN, +-inf, huge, tiny
    st.floats(-1.0, 1.0),
    st.integers(-(2**70), 2**70),
    st.integers(-2, N_CLASSES + 1),
    st.booleans(),
    st.complex_numbers(max_magnitude=2.0),
)
dtypes = st.sampled_from(
    [np.float16, np.float32, np.float64, np.int8, np.int32, np.int64, np.uint8, np.uint64, np.bool_, np.complex64]
)
junk = st.one_of(
    st.none(),
    st.text(max_size=3),
    st.binary(max_size=3),
    numbers,
    st.lists(numbers, max_size=6),
    st.lists(st.lists(numbers, min_size=1, max_size=4), max_size=4),  # possibly ragged
    hnp.arrays(dtypes, hnp.array_shapes(min_dims=0, max_dims=3, max_side=6)),
    st.builds(object),
)


def _near_valid(form: str, lead: tuple[int, ...]):
    """Actions of the right structure whose values may be anything (NaN, inf, huge, out of range, wrong dtype)."""
    size = {"box": 2 + N_CLASSES, "grid": 3}.get(form, 2)
    cell = st.one_of(numbers, st.integers(-1, GRID))
    n = int(np.prod(lead + (size,)))
    arrays = hnp.arrays(np.float64, lead + (size,), elements=st.floats())
    nested = st.lists(cell, min_size=n, max_size=n).map(lambda v: np.array(v, dtype=object).reshape(lead + (size,)))
    values = arrays | arrays.map(torch.from_numpy) | nested.map(lambda v: v.tolist())
    if form != "dict":
        return values
    labels = st.one_of(numbers, hnp.arrays(np.int64, lead, elements=st.integers(-3, N_CLASSES + 2)), junk)
    extra = st.dictionaries(st.sampled_from(["location", "label", "other"]), junk, max_size=3)
    return st.builds(lambda loc, lab: {"location": loc, "label": lab}, values | junk, labels) | extra


def _step_or_value_error(env, action) -> bool:
    """True if ``action`` was accepted; a rejection must be a ValueError with a message."""
    try:
        env.step(action)
    except ValueError as err:
        assert str(err).strip(), "a rejected action must say why"
        return False
    return True


@pytest.mark.parametrize("form", ACTION_FORMS)
@FUZZ
@given(data=st.data())
def test_single_env_step_accepts_or_rejects_cleanly(form, data):
    env = _single(form)
    env.action_space.seed(0)
    env.reset(seed=data.draw(st.integers(0, 2**16), label="seed"))
    steps = 0
    for _ in range(TINY["glimpses"]):
        bad = data.draw(st.one_of(junk, _near_valid(form, ())), label="action")
        if _step_or_value_error(env, bad):
            steps += 1
            if steps == TINY["glimpses"]:
                break
        # whatever happened, a valid action still works and the episode keeps its length
        _, reward, terminated, truncated, info = env.step(env.action_space.sample())
        steps += 1
        assert terminated == (steps == TINY["glimpses"]) and not truncated
        assert info["label"] in range(N_CLASSES)
        if terminated:
            assert reward in (0.0, 1.0)
            break
    while steps < TINY["glimpses"]:
        _, _, terminated, _, _ = env.step(env.action_space.sample())
        steps += 1
        assert terminated == (steps == TINY["glimpses"])
    with pytest.raises(RuntimeError):  # the episode has ended: no silent extra steps
        env.step(env.action_space.sample())


@pytest.mark.parametrize("form", ACTION_FORMS)
@FUZZ
@given(data=st.data())
def test_vector_env_step_accepts_or_rejects_cleanly(form, data):
    env = _vector(form)
    env.action_space.seed(0)
    env.reset(seed=data.draw(st.integers(0, 2**16), label="seed"))
    steps = 0
    for _ in range(TINY["glimpses"] + 1):
        bad = data.draw(st.one_of(junk, _near_valid(form, (N_ENVS,)), _near_valid(form, ())), label="action")
        before = (env.location.clone(), env.index.clone())
        if _step_or_value_error(env, bad):
            steps += 1
        else:
            assert torch.equal(env.location, before[0]) and torch.equal(env.index, before[1])
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        steps += 1
        assert obs["glimpse"].shape == (N_ENVS, 2, 1, 4, 4)
        assert bool(torch.isfinite(obs["glimpse"]).all())
        assert bool((terminated == (steps % TINY["glimpses"] == 0)).all()) and not bool(truncated.any())
        if steps % TINY["glimpses"] == 0:  # same-step autoreset: a new episode starts at t = 0
            assert set(reward.tolist()) <= {0.0, 1.0}
            assert bool((obs["t"] == 0).all())
        else:
            assert bool((obs["t"] == steps % TINY["glimpses"]).all())
