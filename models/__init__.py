"""Stages that work on one model: `effnas train` (models.train) and `effnas describe`
(models.describe). Like every stage, one module plus one registry row."""
