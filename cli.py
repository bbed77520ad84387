"""Run the aim command from a checkout: ``python cli.py --help``."""
from aim.cli import main

if __name__ == "__main__":
    main()
