"""The contracts every layer shares, below both :mod:`fusewb.tracers` (the writer) and
:mod:`fusewb.analysis` (the reader): the capture format (:mod:`.schema`, ``meta.json`` in
:mod:`.meta`), the ring buffer's event kinds (:mod:`.events`), the error users see
(:mod:`.errors`), what needs which extra of the install and where bcc comes from
(:mod:`.extras`), sizes for people (:mod:`.units`), the defaults and limits (:mod:`.defaults`),
and the one copy of "run in a thread, re-raise in the caller" (:mod:`.worker`).

Modules here import nothing from fusewb's other packages.
"""
