"""fusewb: find the tasks stalled behind FUSE writeback and name the kernel path they waited in.

Layers, bottom up: :mod:`fusewb.contract` (capture format, errors, defaults; imports no other
fusewb package), :mod:`fusewb.bpf` (the BPF C), :mod:`fusewb.tracers` (BPF loading, capture
writing) and :mod:`fusewb.analysis` (pandas over captures) beside :mod:`fusewb.fixtures` (a pyfuse3
filesystem with fault injection, load generators), then this package's command line, scenarios
and guest runner on top. docs/architecture.md follows one event through them.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
