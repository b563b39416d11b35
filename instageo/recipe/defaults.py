"""Defaults that a command shares with a recipe field, as plain values: `instarun predict`
shows them in --help without building the recipe's models (which costs a fast start)."""

PREDICT_OVERLAP = 0.25
PREDICT_BATCH_SIZE = 2
INT8_TOLERANCE_PP = 0.5
