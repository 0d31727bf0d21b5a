"""Training: recipes (recipe.py), the shard data pipeline (data.py), EMA (ema.py), the one Accelerate loop
(loop.py) and the exported `.safetensors` model (export.py). Import the submodules; nothing heavy loads here."""
