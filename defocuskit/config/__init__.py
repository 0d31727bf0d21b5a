"""Typed configuration: dataclasses from plain data (typed.py), the Recipe and the packaged recipes (recipe.py)."""
