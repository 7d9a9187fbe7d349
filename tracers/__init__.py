"""Kernel side of fusewb: what the kernel offers, the probe plan, loading BPF, writing captures.

Modules, in the order a session uses them:

* ``features`` (what the kernel offers, with evidence), ``tpfields`` (the name each tracepoint
  field has here, from tracefs formats), ``btf`` (struct offsets, tracepoint arities),
  ``kallsyms`` (functions and the wait function's address range, one read), ``progload``
  (test loads of each program type), ``headers`` (the tree bcc compiles against) -> ``plan`` (``choose_plan``: which probes, which
  ``-D`` defines for ``bpf/``, which capture columns this kernel cannot fill);
* ``program`` compiles ``bpf/fusewb.bpf.c`` with bcc (``--ebpf`` prints exactly that text;
  ``verify_program`` compiles and verifier-loads it without attaching, for ``fusewb doctor``),
  ``events`` mirrors the structs of ``bpf/fusewb.h`` in ctypes by parsing the header;
* ``session`` (``Tracer``) runs it: FUSE filter kept current from ``mounts``, ring buffer
  polled every 100 ms, ``rows`` turn records into table rows, ``capture`` writes Parquet parts
  (built by ``arrow_rows``, which keeps pandas out of the tracer) and ``meta.json`` every
  second, ``live`` prints waits over the threshold; once attached, ``program`` gives back what
  the compile left resident (``release_compile_memory``);
* ``procscan`` finds tasks asleep in the wait since before tracing began; ``cli`` is
  ``fusewb trace``.

How a wait is timed with the tracepoint plan: ``writeback:folio_wait_writeback`` fires just
before the task sleeps on the folio; a per-thread entry keeps its time, stack, bdi, inode and
index. At ``sched_switch`` (raw tracepoint, ``task_struct.pid`` offset from BTF) the entry is
marked asleep if the thread goes to an uninterruptible sleep with a return address inside
``folio_wait_writeback`` among its first stack frames (so a later unrelated sleep is not taken
for the wait); when the thread runs again the wait is emitted with its duration. A tracepoint
hit not followed by such a sleep is only counted (``counters.wait_no_sleep``). At stop, entries
still asleep become ``ongoing`` rows. With the kprobe plan, entry and return of the function
time the wait and the tracepoint marks it as a FUSE wait.

Limits worth knowing: a wait that began before tracing started is invisible to the tracepoint
(it fires once per sleep); such tasks are listed in ``meta.json`` ``unseen_waiters`` from their
``/proc`` stacks, without bdi. On kernels where ``fuse_request_send`` fires when the server
reads the request, ``requests.pid`` is that reader, not the original requester.

``meta.json`` ``counters``: ``wait_tp_fuse``/``wait_tp_other`` (wait tracepoint hits on FUSE /
filtered-out bdis), ``wait_no_sleep``, ``wait_emitted`` (rows: waits of the row threshold or more), ``req_sent``/``req_ended``/
``req_end_unmatched`` (ended requests sent before tracing), ``shrink_calls``/``_scanned``/
``_reclaimed`` (reclaim scans that met no dirty or writeback folio, summed instead of
streamed), ``throttle_other``, ``pending_full`` (state maps full), ``hist_full`` (histogram maps full: an
ended request or wait not counted), ``inflight_writes.<conn>`` and ``inflight_writes_max.<conn>``,
``missed_runs`` and ``missed.<program>`` (runs of a probe the kernel skipped because a BPF
program was already running on that CPU, its recursion guard; from each program's
``recursion_misses``, 5.12+: in a loaded 1-vCPU 7.3 guest 6 traced runs in 56 lost a
request's send or end this way), and with kprobes ``kprobe.<function>.count|total_ns|max_ns``.
Every ended request and wait is in ``meta.json`` ``histograms`` (contract/histogram.py); only
those of ``row_threshold_ms`` or more are rows.
"""
