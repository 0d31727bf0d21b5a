"""The `defocuskit` command line (Typer): thin commands over the API, eval, train and data layers."""
