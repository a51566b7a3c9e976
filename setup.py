"""Installs the ``ram_env`` and ``agents`` packages and the ``train_agent`` / ``evaluate`` scripts."""

from setuptools import find_packages, setup

setup(
    name="ram-attention",
    version="0.1.0",
    description="Recurrent Models of Visual Attention (Mnih et al. 2014) as Gymnasium environments and agents",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["ram_env", "ram_env.*", "agents", "agents.*"]),
    # The algorithms' hyperparameter files (RL Baselines3 Zoo format), read by train_agent.py and by the Zoo.
    package_data={"agents.sb3": ["hyperparams/*.yml"]},
    py_modules=["train_agent", "evaluate"],
    install_requires=[
        "gymnasium>=1.1",
        "stable-baselines3>=2.4",
        # sb3-contrib: TRPO, TQC, RecurrentPPO and auxppo (--algo), imported by agents.sb3.
        "sb3-contrib>=2.4",
        # The oldest versions run: 2.11 (the CUDA benchmarks) and 2.13 (CI); fused CPU Adam needs 2.4 or later.
        "torch>=2.11",
        "numpy>=1.24",
        "matplotlib>=3.7",
        # tqdm: the training progress bar; tensorboard: the training logs (SummaryWriter).
        "tqdm>=4.60",
        "tensorboard>=2.12",
        "pillow>=9",
        # pyyaml: the hyperparameter files in agents/sb3/hyperparams/.
        "pyyaml>=5.4",
    ],
    extras_require={
        # Kept so that `pip install -e ".[contrib]"` still works: sb3-contrib is now a base dependency.
        "contrib": [],
        # RL Baselines3 Zoo (python -m rl_zoo3.train / enjoy with agents/sb3/hyperparams/*.yml); its enjoy script
        # imports requests and its hyperparameter search (-optimize) writes its trials with pandas, neither declared.
        # 2.9.2 matches stable-baselines3 2.9.2.
        "zoo": ["rl-zoo3>=2.9.2", "requests", "pandas"],
        "test": ["pytest>=7", "hypothesis>=6", "ruff>=0.5", "mypy==2.4.1"],
    },
    entry_points={
        "console_scripts": [
            "ram-train=train_agent:main",
            "ram-evaluate=evaluate:main",
        ]
    },
)
