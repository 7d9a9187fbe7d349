"""The contracts every layer shares, below both :mod:`fusewb.tracers` (the writer) and
:mod:`fusewb.analysis` (the reader): the capture format (:mod:`.schema`, :mod:`.meta` for ``meta.json``), the
ring buffer's event kinds (:mod:`.events`), the error users see
(:mod:`.errors`), sizes for people (:mod:`.units`) and the defaults and limits (:mod:`.defaults`).

Modules here import nothing from fusewb's other packages.
"""
