"""Kernel side of fusewb: what the kernel offers, the probe plan, loading BPF, writing captures."""
