"""benchmarks/bench_train.py: the compute floor it reports (FLOP count, probe size, share)."""

from __future__ import annotations

import pytest
import torch

from benchmarks import bench_train


def _model() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LSTMCell(2, 5), torch.nn.Linear(6, 7))


def test_flops_per_image_counts_linear_and_lstm_multiply_adds_three_times_two():
    macs = 3 * 4 + 4 * 5 * (2 + 5) + 6 * 7  # 194
    assert bench_train.flops_per_image(_model(), glimpses=6) == 3 * 2 * macs * 6


def test_largest_layer_is_the_one_with_most_multiply_adds():
    assert bench_train.largest_layer(_model()) == (7, 20)  # the LSTM's stacked gates: (2 + 5) x 4 * 5
    assert bench_train.largest_layer(torch.nn.Linear(64, 128)) == (64, 128)


def test_add_floor_is_the_products_time_at_the_probed_rate():
    row = {
        "batch": 32,
        "mc_samples": 2,
        "precision": "fp32",
        "ms_per_update": 5.0,
        "flops_per_image": 1e6,
        "largest_layer": [64, 48],
    }
    bench_train.add_floor(row, torch.device("cpu"))
    assert row["gemm_shape"] == [64, 64, 48]  # (B * M, in) @ (in, out)
    assert row["gemm_gflops"] > 0
    floor_ms = 1e3 * 1e6 * 32 * 2 / (row["gemm_gflops"] * 1e9)
    assert row["floor_ms_per_update"] == pytest.approx(floor_ms, rel=1e-12)
    assert row["share_of_floor"] == row["fraction_of_floor"] == pytest.approx(floor_ms / 5.0, rel=1e-12)
    assert row["compute_floor_images_per_s"] == pytest.approx(32 / (floor_ms / 1e3), rel=1e-12)


def test_gemm_gflops_measures_the_requested_product():
    fast = bench_train.gemm_gflops(256, 256, 256, torch.device("cpu"), "fp32", seconds=0.05)
    assert 0.01 < fast < 1e5  # a rate in GFLOP/s, not FLOP/s or a time


def test_profile_update_attributes_matrix_product_time_to_the_matmul_share():
    a, b = torch.randn(256, 256), torch.randn(256, 256)

    def only_products(step: int) -> None:
        torch.mm(a, b)

    def no_products(step: int) -> None:
        a.add(b)

    products = bench_train.profile_update(only_products, updates=3)
    assert products["matmul_share"] > 0.9  # the rest: allocating the result
    assert products["top"][0]["op"] == "aten::mm" and products["top"][0]["calls_per_update"] == 1
    assert bench_train.profile_update(no_products, updates=3)["matmul_share"] == 0.0


@pytest.mark.requires_mnist
def test_bench_times_the_presets_own_model():
    # --preset times that recipe's update: an LSTM core's stacked gates, (256 + 256) x (4 x 256), not the default
    # ReLU core's (256 + 256) x 256; the env argument is ignored.
    row = bench_train.bench("RAM/MNIST-v0", 4, 1, torch.device("cpu"), 0.01, preset="cluttered60-4g-lstm")
    assert row["largest_layer"] == [512, 1024] and row["batch"] == 4
    assert bench_train.bench("RAM/MNIST-v0", 4, 1, torch.device("cpu"), 0.01)["largest_layer"] == [512, 256]
