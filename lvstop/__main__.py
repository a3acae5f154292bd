"""`python -m lvstop`: the same as the `lvstop` command."""

import sys


def _main() -> None:
    from lvstop.cli import main  # imported here so that `import lvstop.__main__` stays cheap

    sys.exit(main())


if __name__ == "__main__":
    _main()
