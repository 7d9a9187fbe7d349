"""Helpers shared by the question modules: the ``requires`` decorator and column derivations."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import numpy as np
import pandas as pd

from fusewb.analysis.capture import Capture

__all__ = ["requires", "seconds_since_start", "mount_column"]

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
    names = sorted(set(mapping.values()) | {"?"})
    if not len(frame):
        return pd.Series(pd.Categorical(np.array([], dtype=object)), index=frame.index,
                         name="mount")
    number = {name: i for i, name in enumerate(names)}
    bdi = frame["bdi"].astype("category")
    host = frame["host"].astype("category")
    # hosts x (bdis + 1): the code of each pair's mount; the last column is a null bdi (code -1)
    lookup = np.array([[number[mapping.get((str(h), str(b)), "?")] for b in bdi.cat.categories]
                       + [number["?"]] for h in host.cat.categories], dtype=np.int32)
    codes = lookup[host.cat.codes.to_numpy(), bdi.cat.codes.to_numpy()]
    mount = pd.Categorical.from_codes(codes, categories=names).remove_unused_categories()
    return pd.Series(mount, index=frame.index, name="mount")
