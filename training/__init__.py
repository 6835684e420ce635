"""Training, above the architecture vocabulary and below the stages: data (sources, splits,
caches, batched augmentation), the proxy trainer and its config, the CPU kernels and lanes, the
trial contract every executor runs (`training.trials`), zero-cost scores and the Optuna trial log.
"""
