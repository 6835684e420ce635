"""The one Ray adapter: runs a stage's trials on Ray Tune (adapters.raytune) and `effnas train
train.workers=N` on Ray Train (adapters.raytrain). Only this folder imports Ray; every stage sees
a plain `Executor` (training.trials) or a launcher of workers (models.data_parallel)."""
