"""Helpers shared by the question modules: the ``requires`` decorator and column derivations."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import numpy as np
import pandas as pd

from fusewb.analysis.capture import Capture

__all__ = ["requires", "seconds_since_start", "mount_column", "NS_PER_MS"]

NS_PER_MS = 1_000_000

P = ParamSpec("P")
R = TypeVar("R")


def requires(*needs: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Declare the events a question needs (tables or ``vm:<kind>``) and check them on each call.

    The wrapped function keeps ``REQUIRES`` (the list) so reports can tell which questions a
    capture can answer; a capture lacking them raises ``MissingEventsError`` (one line, exit 2).
    """

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            cap = args[0] if args else kwargs.get("cap")
            if isinstance(cap, Capture):
                cap.require(needs, f"{fn.__name__}()")
            return fn(*args, **kwargs)

        wrapper.REQUIRES = list(needs)  # type: ignore[attr-defined]
        return wrapper

    return decorate


def seconds_since_start(cap: Capture, frame: pd.DataFrame, column: str = "ts_ns") -> pd.Series:
    """Seconds from each host's capture start to ``frame[column]`` (float; NaN where null)."""
    host = frame["host"].astype("category")
    by_host = cap.start_ns().to_dict()
    lookup = np.array([float(by_host.get(str(h), 0)) for h in host.cat.categories] + [np.nan])
    starts = lookup[host.cat.codes.to_numpy()]
    values = frame[column].to_numpy(dtype="float64", na_value=np.nan)
    return pd.Series((values - starts) / 1e9, index=frame.index, name="t_s")


def mount_column(cap: Capture, frame: pd.DataFrame) -> pd.Series:
    """The mountpoint of each row's ``(host, bdi)`` from meta (``?`` when unknown), categorical."""
    mapping = cap.mount_of()
    values = np.full(len(frame), "?", dtype=object)
    if len(frame):
        bdi = frame["bdi"].astype("category")
        categories = [str(c) for c in bdi.cat.categories]
        bdi_codes = bdi.cat.codes.to_numpy()
        host_codes = frame["host"].astype("category").cat.codes.to_numpy()
        host_names = [str(h) for h in frame["host"].astype("category").cat.categories]
        for h, host in enumerate(host_names):
            lookup = np.array([mapping.get((host, c), "?") for c in categories] + ["?"], object)
            mask = host_codes == h
            values[mask] = lookup[bdi_codes[mask]]
    return pd.Series(pd.Categorical(values), index=frame.index, name="mount")
