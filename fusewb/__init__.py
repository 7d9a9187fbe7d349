"""fusewb: find the tasks stalled behind FUSE writeback and name the kernel path they waited in.

Sub-packages: :mod:`fusewb.tracers` (BPF loading, capture), :mod:`fusewb.analysis` (pandas over
captures), :mod:`fusewb.fixtures` (a pyfuse3 filesystem with fault injection, load generators).
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
