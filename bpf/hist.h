/* hist.h: the bucket of a latency in the in-kernel histograms. The layout (HIST_SUB_BITS,
 * HIST_MAX_MSB, HIST_BUCKETS) is fusewb/contract/histogram.py's, passed as -D defines; that
 * module's bucket_of() is the same function, and a test compiles this file with gcc to check it. */
#ifndef FUSEWB_HIST_H
#define FUSEWB_HIST_H

/* floor(log2(v)) for v > 0, by halving (BPF has no count-leading-zeros instruction). */
static __always_inline u32 hist_log2(u64 v)
{
    u32 r = 0;
    if (v >> 32) { v >>= 32; r += 32; }
    if (v >> 16) { v >>= 16; r += 16; }
    if (v >> 8) { v >>= 8; r += 8; }
    if (v >> 4) { v >>= 4; r += 4; }
    if (v >> 2) { v >>= 2; r += 2; }
    if (v >> 1) { r += 1; }
    return r;
}

/* Below 2^HIST_SUB_BITS ns a bucket per value; above, 2^HIST_SUB_BITS buckets per power of two. */
static __always_inline u32 hist_bucket(u64 v)
{
    if (v < (1ULL << HIST_SUB_BITS))
        return (u32)v;
    u32 msb = hist_log2(v);
    if (msb > HIST_MAX_MSB)
        return HIST_BUCKETS - 1;
    return ((msb - HIST_SUB_BITS + 1) << HIST_SUB_BITS) +
           (u32)((v >> (msb - HIST_SUB_BITS)) & ((1ULL << HIST_SUB_BITS) - 1));
}

#endif /* FUSEWB_HIST_H */
