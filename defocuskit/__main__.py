"""`python -m defocuskit` (and `accelerate launch -m defocuskit`) entry point."""

from defocuskit.cli.app import main

if __name__ == "__main__":
    main()
