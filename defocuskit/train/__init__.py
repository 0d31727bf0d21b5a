"""Training: the shard data pipeline (data.py, stream.py, augment.py), EMA (ema.py), the loop's state
(state.py) and the one Accelerate loop (loop.py). Import the submodules; nothing heavy loads here."""
