"""Mutation check: plant each bug the tests exist to catch and make sure a fast test fails.

Not a test module (pytest does not collect it): run it by hand after changing the tests or the code they guard::

    python tests/mutation_check.py                      # every mutation, table on stdout
    python tests/mutation_check.py --output results/mutation_check.txt
    python tests/mutation_check.py --only advantage-not-detached --verbose
    python tests/mutation_check.py --all-failures       # no -x: list every test each mutation fails

The working tree (tracked and untracked, not ignored files) is copied to a temporary directory; each mutation edits
the copy (exact text replacement; a mutation whose text is no longer in the code is reported, not skipped silently),
runs ``python -m pytest -q -x`` on :data:`FAST_TESTS` there with one thread (``--all-failures``: without ``-x``),
and puts the file back. The unmutated
copy must pass first. Exit status 0 only if the baseline passes and every mutation makes a test fail.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: The fast subset every mutation runs (about a minute with one thread when nothing fails).
FAST_TESTS = (
    "tests/agents/test_rollout.py",
    "tests/agents/test_evaluation.py",
    "tests/ram_env/test_sensor.py",
    "tests/ram_env/test_vector.py::test_vector_matches_single_env_on_the_training_path",
    "tests/ram_env/test_vector.py::test_vector_matches_single_env_tiny_cluttered",
    "tests/ram_env/test_envs.py::test_reset_options_choose_the_image_and_first_location",
    "tests/agents/test_trainer.py",
    "tests/agents/test_sb3_policies.py",
)


@dataclass(frozen=True)
class Mutation:
    """A deliberate bug: in ``path``, each ``old`` text (found exactly ``count`` times) becomes its ``new`` text."""

    name: str
    path: str
    edits: tuple[tuple[str, str], ...]
    description: str
    count: int = 1


MUTATIONS = (
    Mutation(
        "advantage-not-detached",
        "agents/rollout.py",
        (("advantage = (reward - traj.baseline).detach()", "advantage = reward - traj.baseline"),),
        "hybrid_loss: the REINFORCE term sends gradient into the baseline",
    ),
    Mutation(
        "reinforce-sign-flipped",
        "agents/rollout.py",
        (("reinforce = -(traj.log_pi * advantage)", "reinforce = (traj.log_pi * advantage)"),),
        "hybrid_loss: gradient ascent on the loss of the location policy",
    ),
    Mutation(
        "baseline-input-not-detached",
        "agents/ram.py",
        (("return self.baseline_net(h_t.detach())", "return self.baseline_net(h_t)"),),
        "RecurrentAttentionModel.baseline: the squared error trains the core",
    ),
    Mutation(
        "baseline-never-trained",
        "agents/rollout.py",
        (("((traj.baseline - reward) ** 2)", "((traj.baseline.detach() - reward) ** 2)"),),
        "hybrid_loss: the baseline's squared error carries no gradient",
    ),
    Mutation(
        "classifier-gradient-into-location",
        "agents/ram.py",
        (("l_next = mu.detach()", "l_next = mu"),),
        "next_location: the next location keeps the graph of mu (classifier gradient reaches the location network)",
    ),
    Mutation(
        "reinforce-into-core-ignored",
        "agents/ram.py",
        (("h_t if self.config.reinforce_into_core else h_t.detach()", "h_t.detach()"),),
        "RecurrentAttentionModel.location_mean: the reinforce_into_core switch does nothing",
    ),
    Mutation(
        "log-pi-of-the-wrong-step",
        "agents/rollout.py",
        (("mu = torch.stack(means, dim=1)", "mu = torch.stack(means[1:] + means[:1], dim=1)"),),
        "rollout: log pi of each chosen location under the mean of another step",
    ),
    Mutation(
        "reward-of-the-wrong-step",
        "agents/rollout.py",
        (
            ("    logits = None\n", "    logits = None\n    rewards = []\n"),
            (
                "        obs, reward, _terminated, _truncated, info = env.step(action)\n",
                "        obs, reward, _terminated, _truncated, info = env.step(action)\n"
                "        rewards.append(reward)\n",
            ),
            ("        reward=reward,\n", "        reward=rewards[-2] if len(rewards) > 1 else reward,\n"),
        ),
        "rollout: the trajectory's reward is the second-to-last step's (always 0)",
    ),
    Mutation(
        "labels-of-the-next-episodes",
        "agents/rollout.py",
        (
            (
                "    runner.obs, runner.info = obs, info\n",
                '    runner.obs, runner.info = obs, info\n    labels, index = info["label"], info["index"]\n',
            ),
        ),
        "rollout: labels and index read after the last step (under autoreset, the next batch's)",
    ),
    Mutation(
        "log-pi-ignores-location-std",
        "agents/rollout.py",
        (("/ (2 * std**2) - math.log(std) - _LOG_SQRT_2PI)", "/ 2 - _LOG_SQRT_2PI)"),),
        "rollout: log pi computed with sigma = 1 instead of location_std",
    ),
    Mutation(
        "deterministic-rollout-samples",
        "agents/ram.py",
        (("        if not deterministic:\n", "        if True:\n"),),
        "rollout: deterministic=True still adds location noise (mean-location evaluation is not at the mean)",
    ),
    Mutation(
        "patch-start-rounding",
        "ram_env/sensor.py",
        (("- patch * 0.5 + 0.5)", "- patch * 0.5)"),),
        "sensor: patch start floor(c - p/2) instead of floor(c - p/2 + 1/2) (numpy and torch)",
        count=2,
    ),
    Mutation(
        "patch-scale-exponent",
        "ram_env/sensor.py",
        (("return self.glimpse_size * self.scale**i", "return self.glimpse_size * self.scale ** (i + 1)"),),
        "sensor: patch i is g * s**(i+1) wide (every scale one step too coarse)",
    ),
    Mutation(
        "block-mean-divisor",
        "ram_env/sensor.py",
        (("area = (steps.to(torch.float64) ** 2 / pixel_scale)", "area = (steps.to(torch.float64) / pixel_scale)"),),
        "torch sensor: a block sum divided by f instead of f**2",
    ),
    Mutation(
        "stale-table-after-autoreset",
        "ram_env/vector.py",
        (
            (
                "self._table = integral_image(self.images.index_select(0, index), out=self._table)",
                "self._table = self._table if self._table is not None else integral_image(self.images[index])",
            ),
            (
                "            self._compose_tables(layout)",
                "            self._table is None and self._compose_tables(layout)",
            ),
        ),
        "vector env: after an autoreset the glimpses still read the previous episodes' canvases",
    ),
    Mutation(
        "zero-state-core-reads-wrong-columns",
        "agents/ram.py",
        (("weight_g = linear.weight[:, : g_t.shape[1]]", "weight_g = linear.weight[:, -g_t.shape[1] :]"),),
        "core: the first step from the zero state multiplies g_t by the recurrent columns of the ReLU core",
    ),
    Mutation(
        "canvas-composed-one-entry-off",
        "ram_env/vector.py",
        (("offset=width + 2,", "offset=width + 1,"),),
        "vector env: canvases composed into their tables one entry to the left of pixel (0, 0)",
    ),
    Mutation(
        "mc-samples-read-other-canvases",
        "ram_env/vector.py",
        (
            (
                "torch.arange(self.num_envs, device=self.device) // self.mc_samples",
                "torch.arange(self.num_envs, device=self.device) % self.distinct_images",
            ),
        ),
        "vector env: with mc_samples > 1 an env reads the canvas of another image than info['index'] names",
    ),
    Mutation(
        "reset-option-index-overridden",
        "ram_env/envs.py",
        (("        elif task.config.is_ordered:\n", "        if task.config.is_ordered:\n"),),
        "single env: reset(options={'index': i}) on an ordered split shows the pass's next image instead",
    ),
    Mutation(
        "monte-carlo-last-sample",
        "agents/evaluation.py",
        (
            (
                "prob_sum.index_add_(0, index, probs)",
                "prob_sum[index] = probs",
            ),
        ),
        "evaluate_policy: the Monte Carlo prediction is the last sample's, not the average",
    ),
    Mutation(
        "lr-schedule-off-by-one",
        "agents/trainer.py",
        (
            (
                "factor = config.lr_decay ** (step // config.lr_decay_steps)",
                "factor = config.lr_decay ** ((step + 1) // config.lr_decay_steps)",
            ),
        ),
        "lr_factor: the learning rate decays one update early",
    ),
    Mutation(
        "warmup-starts-at-zero",
        "agents/trainer.py",
        (("factor *= (step + 1) / warmup", "factor *= step / warmup"),),
        "lr_factor: the first warmup update runs at learning rate 0 (one update wasted, the ramp one update late)",
    ),
    Mutation(
        "gpu-preset-decay-not-scaled",
        "agents/config.py",
        (
            (
                'recipe.get("lr_decay_steps", defaults.lr_decay_steps) / k',
                'recipe.get("lr_decay_steps", defaults.lr_decay_steps)',
            ),
        ),
        "large_batch: the -gpu presets decay every 1000 updates (8x slower per image than the preset)",
    ),
    Mutation(
        "trainer-checks-actions",
        "agents/trainer.py",
        (("validate_actions=False,", "validate_actions=True,"),),
        "RAMTrainer: the vector env checks every action (a host sync per step: the update cannot be captured)",
    ),
    Mutation(
        "evaluation-streams-shared",
        "agents/evaluation.py",
        (('manual_seed(stream_seed(seed, "eval/noise"))', "manual_seed(env_seed)"),),
        "evaluate_policy: the location noise is seeded like the initial locations (correlated draws)",
    ),
    Mutation(
        "wrapped-repeats-counted",
        "agents/evaluation.py",
        (("            keep[keep.clone()] = ~seen[index[keep]]", "            pass"),),
        "evaluate_policy: the last batch's wrapped repeats are scored a second time",
    ),
    Mutation(
        "sb3-mask-swapped",
        "agents/sb3/policies.py",
        (("torch.where(last, is_location, ~is_location)", "torch.where(last, ~is_location, is_location)"),),
        "SB3 policies: the class is credited before the last glimpse and the location at it (the ignored parts)",
    ),
    Mutation(
        "sb3-rollout-log-prob-unmasked",
        "agents/sb3/policies.py",
        (
            (
                "    def forward(self, obs: Any, *args: Any, **kwargs: Any) -> Any:\n        with self._masking(obs):",
                "    def forward(self, obs: Any, *args: Any, **kwargs: Any) -> Any:\n        with self._masking(None):",
            ),
            (
                'self.unused_parts(obs["t"]) if self.mask_unused_actions else None',
                'self.unused_parts(obs["t"]) if obs is not None and self.mask_unused_actions else None',
            ),
        ),
        "SB3 policies: the rollout's old log-probability sums every part, the update's is masked (PPO's ratio is off)",
    ),
)


@dataclass
class Outcome:
    name: str
    status: str  # "caught", "MISSED", "NOT APPLIED" (text not found); the baseline run: "passed" or "FAILED"
    tests: list[str]  # the failing tests (or why there are none)
    seconds: float
    output: str


def copy_tree(dest: Path) -> None:
    """Copy the working tree's tracked and untracked (not ignored) files to ``dest``."""
    names = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for raw in filter(None, names):
        rel = raw.decode()
        src = ROOT / rel
        if not src.is_file():  # deleted in the working tree but still tracked
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)


def run_tests(
    workdir: Path, tests: tuple[str, ...], timeout: float, stop_first: bool
) -> tuple[bool, list[str], str, float]:
    """``python -m pytest -q [-x]`` in ``workdir`` with one thread; returns (passed, failing tests, output, seconds)."""
    env = {**os.environ, "PYTHONPATH": str(workdir), "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *(["-x"] if stop_first else []), *tests]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        out = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        return False, [f"timeout after {timeout:.0f} s"], out, time.perf_counter() - start
    seconds = time.perf_counter() - start
    output = proc.stdout + proc.stderr
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", output, re.MULTILINE)
    if not failed and proc.returncode != 0:
        failed = [f"pytest exit status {proc.returncode}"]
    return proc.returncode == 0, failed, output, seconds


def apply(mutation: Mutation, workdir: Path) -> str | None:
    """Edit the copy; returns the original text (``None`` if the mutation's text is not in the code)."""
    path = workdir / mutation.path
    original = path.read_text()
    text = original
    for old, new in mutation.edits:
        if text.count(old) != mutation.count:
            return None
        text = text.replace(old, new)
    path.write_text(text)
    return original


def check(
    mutations: tuple[Mutation, ...], tests: tuple[str, ...], timeout: float, verbose: bool, stop_first: bool = True
) -> list[Outcome]:
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="mutation_check_") as tmp:
        workdir = Path(tmp)
        copy_tree(workdir)
        passed, failed, output, seconds = run_tests(workdir, tests, timeout, stop_first=False)
        outcomes.append(Outcome("(no mutation)", "passed" if passed else "FAILED", failed, seconds, output))
        _report_line(outcomes[-1], verbose)
        if not passed:
            return outcomes
        for mutation in mutations:
            original = apply(mutation, workdir)
            if original is None:
                outcomes.append(Outcome(mutation.name, "NOT APPLIED", ["text not found in " + mutation.path], 0.0, ""))
                _report_line(outcomes[-1], verbose)
                continue
            try:
                passed, failed, output, seconds = run_tests(workdir, tests, timeout, stop_first)
            finally:
                (workdir / mutation.path).write_text(original)
            outcomes.append(Outcome(mutation.name, "MISSED" if passed else "caught", failed, seconds, output))
            _report_line(outcomes[-1], verbose)
    return outcomes


def _report_line(outcome: Outcome, verbose: bool) -> None:
    first = outcome.tests[0] if outcome.tests else ""
    print(f"  {outcome.name:36s} {outcome.status:11s} {outcome.seconds:6.1f} s  {first}", file=sys.stderr)
    if verbose and outcome.output:
        print(outcome.output[-4000:], file=sys.stderr)


def _commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    dirty = git("status", "--porcelain", "--untracked-files=no")
    return git("rev-parse", "--short", "HEAD") + (" (with uncommitted changes)" if dirty else "")


def report(
    outcomes: list[Outcome], mutations: tuple[Mutation, ...], tests: tuple[str, ...], total: float, stop_first: bool
) -> str:
    import torch

    described = {m.name: m for m in mutations}
    lines = [
        "Mutation check (tests/mutation_check.py)",
        f"date:    {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"commit:  {_commit()}",
        f"python:  {platform.python_version()}, torch {torch.__version__}, OMP_NUM_THREADS=1",
        f"tests:   python -m pytest -q {'-x ' if stop_first else ''}" + " ".join(tests),
        "",
        f"{'mutation':36s} {'result':11s} {'time':>7s}  {'first failing test' if stop_first else 'failing tests'}",
        f"{'-' * 36} {'-' * 11} {'-' * 7}  {'-' * 40}",
    ]
    for o in outcomes:
        lines.append(f"{o.name:36s} {o.status:11s} {o.seconds:6.1f}s  {o.tests[0] if o.tests else ''}")
        lines += [f"{'':58s}{t}" for t in o.tests[1:]]
        if o.name in described:
            m = described[o.name]
            lines.append(f"{'':4s}{m.path}: {m.description}")
    caught = sum(o.status == "caught" for o in outcomes)
    lines += ["", f"{caught} of {len(mutations)} mutations caught; {total:.0f} s in all."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run these mutations only")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--output", type=Path, help="also write the report to this file")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds allowed per test run")
    parser.add_argument("--verbose", action="store_true", help="print pytest's output of every run")
    parser.add_argument("--all-failures", action="store_true", help="run without -x: list every failing test")
    args = parser.parse_args(argv)
    if args.list:
        for m in MUTATIONS:
            print(f"{m.name:36s} {m.path}: {m.description}")
        return 0
    mutations = MUTATIONS
    if args.only:
        unknown = set(args.only) - {m.name for m in MUTATIONS}
        if unknown:
            parser.error(f"unknown mutation(s) {', '.join(sorted(unknown))}; see --list")
        mutations = tuple(m for m in MUTATIONS if m.name in args.only)
    start = time.perf_counter()
    stop_first = not args.all_failures
    outcomes = check(mutations, FAST_TESTS, args.timeout, args.verbose, stop_first)
    text = report(outcomes, mutations, FAST_TESTS, time.perf_counter() - start, stop_first)
    print(text, end="")
    if args.output:
        args.output.write_text(text)
    baseline_ok = outcomes[0].status == "passed"
    return 0 if baseline_ok and all(o.status == "caught" for o in outcomes[1:]) else 1


if __name__ == "__main__":
    sys.exit(main())
