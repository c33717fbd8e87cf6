"""A bench worker process's entry point (``python -m``): a module nothing imports, so that
running it does not load it twice."""

import sys
from multiprocessing.connection import Connection

from ._workers import work

if __name__ == "__main__":
    work(Connection(int(sys.argv[1])))
