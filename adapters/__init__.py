"""The one Ray adapter (adapters.raytune): runs a stage's trials on Ray Tune. Only this folder
imports Ray; every stage sees a plain `Executor` (training.trials)."""
