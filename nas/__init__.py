"""The search stage: the reward, the samplers, the driver that runs trials on Ray Tune.

`nas.stage` is what `effnas search` runs; the pieces are importable on their own and free of
Ray (`nas.reward.reward`, `nas.samplers.make_sampler`, `nas.driver.Search`).
"""

__all__ = ["driver", "records", "reward", "samplers", "stage"]
