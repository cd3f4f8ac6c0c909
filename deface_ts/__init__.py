"""deface-ts: remove the face from head-and-neck radiotherapy CT without harming what radiotherapy research needs."""

__version__ = "0.1.0"
