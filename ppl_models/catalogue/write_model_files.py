"""Rewrite every family's default model file, ``ppl_models/models/FAMILY.yaml``, from its spec class.

    python -m ppl_models.catalogue.write_model_files [DIRECTORY]

Run it after changing a family's spec (a default, a key, a doc string): ``tests/test_model_files.py``
fails while a shipped file differs from ``ppl-models spec FAMILY``.
"""

from __future__ import annotations

import sys

from .model_files import write_default_files


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    for path in write_default_files(argv[0] if argv else None):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
