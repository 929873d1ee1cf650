"""``python -m fpliif ...`` (and ``torchrun ... -m fpliif train ...``): the ``fpliif`` command line."""

from fpliif.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
