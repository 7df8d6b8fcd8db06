"""``python -m memos.cli``: the same as the ``memos`` console script."""

from memos.cli import main

if __name__ == "__main__":
    main()
