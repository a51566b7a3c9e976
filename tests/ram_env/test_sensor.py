"""The glimpse sensor: hand-computed cases, numpy/torch agreement, summed-area table path, SensorSpec."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ram_env.sensor import SensorSpec, glimpse_from_integral, glimpse_numpy, glimpse_torch, integral_image

CORNERS = [(-1.0, -1.0), (1.0, 1.0), (-1.0, 1.0), (1.0, -1.0)]


def _glimpse(image, x, y, g, k=1, s=2):
    return glimpse_numpy(np.asarray(image), np.array([x, y]), glimpse_size=g, num_scales=k, scale=s)


def _reference(image: np.ndarray, loc, g: int, k: int, s: int) -> np.ndarray:
    """Pixel-by-pixel statement of the documented convention (slow, independent of the package's code)."""
    image = image.astype(np.float64) / 255.0 if image.dtype == np.uint8 else image.astype(np.float64)
    channels, height, width = image.shape
    out = np.zeros((k, channels, g, g))
    for i in range(k):
        p = g * s**i
        f = s**i
        x0 = math.floor((float(loc[0]) + 1.0) * 0.5 * width - p * 0.5 + 0.5)
        y0 = math.floor((float(loc[1]) + 1.0) * 0.5 * height - p * 0.5 + 0.5)
        for c in range(channels):
            for r in range(g):
                for q in range(g):
                    total = 0.0
                    for dy in range(f):
                        for dx in range(f):
                            yy, xx = y0 + r * f + dy, x0 + q * f + dx
                            if 0 <= yy < height and 0 <= xx < width:
                                total += image[c, yy, xx]
                    out[i, c, r, q] = total / (f * f)
    return out


# ---------------------------------------------------------------------------------------- hand-computed cases


def test_centre_of_4x4_two_scales():
    image = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    out = _glimpse(image, 0.0, 0.0, g=2, k=2)
    assert out.shape == (2, 1, 2, 2) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0, 0], [[5, 6], [9, 10]])  # pixels 1..2 of each axis
    np.testing.assert_array_equal(out[1, 0], [[2.5, 4.5], [10.5, 12.5]])  # whole image, 2 x 2 block means


def test_x_is_columns_and_y_is_rows():
    image = (10 * np.arange(6)[:, None] + np.arange(6)[None, :]).astype(np.float32)[None]  # value = 10 row + col
    # x = 0 -> columns 2, 3; y = -2/3 -> centre at row 1 -> rows 0, 1.
    np.testing.assert_array_equal(_glimpse(image, 0.0, -2.0 / 3.0, g=2)[0, 0], [[2, 3], [12, 13]])
    np.testing.assert_array_equal(_glimpse(image, -2.0 / 3.0, 0.0, g=2)[0, 0], [[20, 21], [30, 31]])


def test_top_left_corner_reads_three_quarters_zero():
    image = (np.arange(16, dtype=np.float32) + 1).reshape(1, 4, 4)  # no zero pixels inside the image
    out = _glimpse(image, -1.0, -1.0, g=2, k=2)
    np.testing.assert_array_equal(out[0, 0], [[0, 0], [0, 1]])  # window rows/cols -1..0: only pixel (0, 0) inside
    np.testing.assert_array_equal(out[1, 0], [[0, 0], [0, 3.5]])  # window -2..1: one block (1+2+5+6)/4 inside


def test_bottom_right_corner_reads_three_quarters_zero():
    image = (np.arange(16, dtype=np.float32) + 1).reshape(1, 4, 4)
    out = _glimpse(image, 1.0, 1.0, g=2, k=2)
    np.testing.assert_array_equal(out[0, 0], [[16, 0], [0, 0]])  # window 3..4: only pixel (3, 3) inside
    np.testing.assert_array_equal(out[1, 0], [[13.5, 0], [0, 0]])  # window 2..5: block (11+12+15+16)/4


@pytest.mark.parametrize("x, y", [(3.0, -3.0), (-3.0, 3.0), (2.1, 0.0), (0.0, -2.1), (50.0, 50.0)])
def test_beyond_the_image_reads_zero(x, y):
    image = np.full((2, 4, 4), 255, dtype=np.uint8)
    out = _glimpse(image, x, y, g=2, k=2)
    assert out.shape == (2, 2, 2, 2)
    assert not out.any()


def test_odd_glimpse_sizes_round_half_up():
    image = (10 * np.arange(6)[:, None] + np.arange(6)[None, :]).astype(np.float32)[None]
    # g = 3 on 6 pixels: c - p/2 = 3 - 1.5 = 1.5 rounds up to 2 -> pixels 2..4.
    np.testing.assert_array_equal(_glimpse(image, 0.0, 0.0, g=3)[0, 0], image[0, 2:5, 2:5])
    # g = 1 on 4 pixels: c - 1/2 = 1.5 -> pixel 2.
    small = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    np.testing.assert_array_equal(_glimpse(small, 0.0, 0.0, g=1)[0, 0], [[10]])
    # g = 3 on 5 pixels: exactly centred, pixels 1..3.
    five = np.arange(25, dtype=np.float32).reshape(1, 5, 5)
    np.testing.assert_array_equal(_glimpse(five, 0.0, 0.0, g=3)[0, 0], five[0, 1:4, 1:4])
    # g = 3, second scale 6 wide at the centre of 6: the whole image in 2 x 2 blocks.
    blocks = image[0].reshape(3, 2, 3, 2).mean(axis=(1, 3))
    np.testing.assert_array_equal(_glimpse(image, 0.0, 0.0, g=3, k=2)[1, 0], blocks)


def test_scale_three_averages_three_by_three_blocks():
    image = np.arange(36, dtype=np.float32).reshape(1, 6, 6)
    out = _glimpse(image, 0.0, 0.0, g=2, k=2, s=3)
    np.testing.assert_array_equal(out[0, 0], image[0, 2:4, 2:4])
    np.testing.assert_allclose(out[1, 0], image[0].reshape(2, 3, 2, 3).mean(axis=(1, 3)))


def test_uint8_reads_value_over_255_and_channels_are_independent():
    image = np.zeros((3, 4, 4), dtype=np.uint8)
    image[0] = 255
    image[1, 1:3, 1:3] = 51
    out = _glimpse(image, 0.0, 0.0, g=2)
    np.testing.assert_allclose(out[0, 0], 1.0, atol=1e-7)
    np.testing.assert_allclose(out[0, 1], 0.2, atol=1e-7)
    np.testing.assert_array_equal(out[0, 2], 0.0)


@pytest.mark.parametrize("g, k, s", [(2, 2, 2), (3, 2, 2), (2, 2, 3), (1, 3, 2)])
def test_numpy_matches_pixelwise_reference(g, k, s):
    rng = np.random.default_rng(g * 100 + k * 10 + s)
    image = rng.integers(0, 256, size=(2, 7, 9), dtype=np.uint8)  # odd, non-square
    for loc in [*CORNERS, *rng.uniform(-1.5, 1.5, size=(10, 2))]:
        np.testing.assert_allclose(_glimpse(image, *loc, g=g, k=k, s=s), _reference(image, loc, g, k, s), atol=1e-6)


# ----------------------------------------------------------------------------------- numpy vs torch agreement


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("g, k, s, size", [(8, 1, 2, 28), (12, 3, 2, 60), (5, 2, 3, 17), (3, 3, 2, (20, 13))])
def test_torch_matches_numpy(dtype, channels, g, k, s, size):
    height, width = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(channels * 7 + g)
    batch = 24
    if dtype == "uint8":
        images = rng.integers(0, 256, size=(batch, channels, height, width), dtype=np.uint8)
    else:
        images = rng.random((batch, channels, height, width), dtype=np.float32)
    locations = np.concatenate([np.array(CORNERS), rng.uniform(-1.5, 1.5, size=(batch - 4, 2))]).astype(np.float32)
    got = glimpse_torch(torch.from_numpy(images), torch.from_numpy(locations), glimpse_size=g, num_scales=k, scale=s)
    assert got.shape == (batch, k, channels, g, g) and got.dtype == torch.float32
    want = np.stack(
        [glimpse_numpy(images[b], locations[b], glimpse_size=g, num_scales=k, scale=s) for b in range(batch)]
    )
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-6)
    assert got.abs().sum() > 0  # not trivially all zero


def test_torch_hand_case_and_float64_locations():
    image = (torch.arange(16, dtype=torch.float32) + 1).reshape(1, 1, 4, 4)
    locations = torch.tensor([[-1.0, -1.0]], dtype=torch.float64)
    out = glimpse_torch(image, locations, glimpse_size=2, num_scales=2)
    torch.testing.assert_close(out[0, :, 0], torch.tensor([[[0.0, 0], [0, 1]], [[0, 0], [0, 3.5]]]))


# ------------------------------------------------------------------------------------- summed-area table path


def test_integral_image_sums():
    images = torch.randint(0, 256, (3, 2, 5, 7), dtype=torch.uint8)
    table = integral_image(images)
    assert table.shape == (3, 2, 6, 8)
    assert not table[:, :, 0].any() and not table[:, :, :, 0].any()
    for y, x in [(1, 1), (5, 7), (3, 4)]:
        torch.testing.assert_close(table[:, :, y, x], images[:, :, :y, :x].sum(dim=(2, 3)).to(table.dtype))


@pytest.mark.parametrize("planes", [(3, 2), (40, 2), (70, 1)])  # below and above the row-loop threshold
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_integral_image_matches_a_double_cumsum_on_both_build_paths(planes, dtype):
    # Small batches take cumsum down the columns, batches of >= 64 planes the in-place row loop: both must give the
    # table of an independent reference (int64 for uint8: exact; float64 sums of the float pixels otherwise).
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (*planes, 9, 11), generator=gen).to(torch.uint8)
    if dtype == torch.float32:
        images = images.to(torch.float32) / 255.0
    table = integral_image(images)
    reference = torch.zeros(*planes, 10, 12, dtype=torch.float64)
    wide = images.to(torch.int64) if dtype == torch.uint8 else images.to(torch.float64)
    reference[:, :, 1:, 1:] = wide.cumsum(dim=2).cumsum(dim=3).to(torch.float64)
    if dtype == torch.uint8:
        assert table.dtype == torch.int32
        assert torch.equal(table.to(torch.float64), reference)
    else:
        assert table.dtype == torch.float64
        torch.testing.assert_close(table, reference, rtol=1e-12, atol=1e-12)


def test_integral_image_overwrites_a_matching_out_table():
    gen = torch.Generator().manual_seed(1)
    first = torch.randint(0, 256, (70, 1, 6, 5), generator=gen).to(torch.uint8)
    second = torch.randint(0, 256, (70, 1, 6, 5), generator=gen).to(torch.uint8)
    table = integral_image(first)
    again = integral_image(second, out=table)
    assert again is table  # the memory is reused ...
    assert torch.equal(again, integral_image(second))  # ... and holds the new images' table, borders zero
    other = integral_image(second[:3], out=table)  # a table of another shape is not overwritten
    assert other is not table and other.shape == (3, 1, 7, 6) and torch.equal(table, integral_image(second))
    garbage = torch.full_like(table, 7.0)
    assert torch.equal(integral_image(first, out=garbage), integral_image(first))  # zero row and column rewritten


def test_glimpse_from_integral_table_row_shares_tables():
    rng = np.random.default_rng(5)
    images = torch.from_numpy(rng.integers(0, 256, size=(3, 2, 30, 30), dtype=np.uint8))
    spec = SensorSpec(glimpse_size=6, num_scales=3, scale=2)
    table = integral_image(images)  # (3, 2, 31, 31), one per image
    table_row = torch.tensor([0, 0, 1, 2, 2, 2, 1])  # seven glimpses read three tables
    locations = torch.from_numpy(rng.uniform(-1.2, 1.2, size=(7, 2)))
    got = glimpse_from_integral(table, locations, spec, pixel_scale=1 / 255, table_row=table_row)
    want = glimpse_torch(images[table_row], locations, glimpse_size=6, num_scales=3, scale=2)
    assert got.shape == (7, 3, 2, 6, 6)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    # Without table_row, glimpse b reads table b.
    same = glimpse_from_integral(table, locations[:3], spec, pixel_scale=1 / 255)
    torch.testing.assert_close(
        same, glimpse_torch(images, locations[:3], glimpse_size=6, num_scales=3), atol=1e-6, rtol=0
    )


def test_large_uint8_images_are_summed_exactly():
    # 300 x 300 x 255 > 2**24: beyond what a float32 table could hold exactly; the int32 table is exact.
    images = torch.full((1, 1, 300, 300), 255, dtype=torch.uint8)
    images[0, 0, -1, -1] = 254
    table = integral_image(images)
    assert table[0, 0, -1, -1].item() == 300 * 300 * 255 - 1
    out = glimpse_torch(images, torch.tensor([[1.0, 1.0]]), glimpse_size=2)
    np.testing.assert_allclose(out[0, 0, 0].numpy(), [[254 / 255, 0], [0, 0]], atol=1e-6)


def test_uint8_tables_widen_to_int64_before_int32_overflows():
    # 2,903^2 pixels of 255 sum to 2,149,019,295 > 2**31 - 1: an int32 table would wrap around.
    images = torch.full((1, 1, 2903, 2903), 255, dtype=torch.uint8)
    table = integral_image(images)
    assert table.dtype == torch.int64 and table[0, 0, -1, -1].item() == 255 * 2903**2
    assert integral_image(images[:, :, :2900, :2900]).dtype == torch.int32  # 2,144,655,000 still fits


# ------------------------------------------------------------------------------------------------- SensorSpec


@pytest.mark.parametrize("field", ["glimpse_size", "num_scales", "scale"])
@pytest.mark.parametrize("value", [0, -2, 1.5, True, "8", None])
def test_sensor_spec_rejects_bad_values(field, value):
    with pytest.raises(ValueError, match=field):
        SensorSpec(**{field: value})


def test_sensor_spec_geometry():
    spec = SensorSpec(glimpse_size=12, num_scales=3, scale=2)
    assert [spec.patch_size(i) for i in range(3)] == [12, 24, 48]
    assert spec.largest_patch == 48
    assert spec.shape(3) == (3, 3, 12, 12)
    with pytest.raises(ValueError, match="glimpse_size"):
        glimpse_numpy(np.zeros((1, 4, 4)), np.zeros(2), glimpse_size=0)


@pytest.mark.parametrize("k, s", [(1, 2), (3, 2), (4, 2), (2, 3)])
def test_full_white_reads_exactly_one(k, s):
    # a glimpse must stay inside the observation space Box(0, 1): no 1.0000001 from float32 round-off
    images = torch.full((2, 3, 50, 50), 255, dtype=torch.uint8)
    out = glimpse_torch(images, torch.zeros(2, 2), glimpse_size=4, num_scales=k, scale=s)
    assert float(out.max()) == 1.0 and float(out.min()) == 1.0
    table = integral_image(images)
    spec = SensorSpec(glimpse_size=4, num_scales=k, scale=s)
    assert float(glimpse_from_integral(table, torch.zeros(2, 2), spec, pixel_scale=1 / 255).max()) == 1.0
