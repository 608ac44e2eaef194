/* Work items handed out from both ends of per-thread spans. Each thread owns a contiguous span
 * of the items and takes them front to back, one sequential stream the prefetchers can follow; a
 * thread whose span is empty takes items from the back of the others'. So the threads finish
 * within one item of each other even when one starts late (woken from sleep) or runs slower (a
 * busy machine), and the early one never waits long enough at the closing barrier to fall
 * asleep, which would make the next parallel loop start late in turn. */
#ifndef M2C_SPANS_H
#define M2C_SPANS_H

#include <stdint.h>

#include "kernels.h"

/* Threads past this many own no span and only take from the others'. */
enum { M2C_SPANS_MAX = 64 };

typedef struct {
    /* [front, back) of each thread's span, packed in one word so that a single
     * compare-and-swap claims an item from either end; a cache line each, so that owners
     * do not share one */
    struct {
        _Alignas(64) uint64_t front_back;
    } span[M2C_SPANS_MAX];
    int count;
} m2c_spans;

/* Items [0, n) split as evenly as possible over the kernels' threads. */
static inline void m2c_spans_init(m2c_spans *s, int64_t n) {
    int threads = m2c_threads();
    s->count = threads < M2C_SPANS_MAX ? threads : M2C_SPANS_MAX;
    for (int t = 0; t < s->count; t++) {
        uint64_t front = (uint64_t)(n * t / s->count), back = (uint64_t)(n * (t + 1) / s->count);
        s->span[t].front_back = back << 32 | front;
    }
}

/* Claims the front item of span t (from_back 0) or its back item (1); -1 when it is empty. */
static inline int64_t m2c_spans_claim(m2c_spans *s, int t, int from_back) {
    uint64_t *word = &s->span[t].front_back, v = __atomic_load_n(word, __ATOMIC_RELAXED);
    for (;;) {
        uint64_t front = v & 0xffffffffu, back = v >> 32;
        if (front >= back) return -1;
        uint64_t next = from_back ? (back - 1) << 32 | front : back << 32 | (front + 1);
        /* relaxed: items are independent, and the region's closing barrier orders the results */
        if (__atomic_compare_exchange_n(word, &v, next, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
            return (int64_t)(from_back ? back - 1 : front);
    }
}

/* The calling thread's next item, from its own span first, then from the back of the
 * others'; -1 once every span is empty. A team of any size covers every item. */
static inline int64_t m2c_spans_next(m2c_spans *s) {
    int self = m2c_thread_id();
    int64_t item = self < s->count ? m2c_spans_claim(s, self, 0) : -1;
    for (int i = 1; item < 0 && i <= s->count; i++)
        item = m2c_spans_claim(s, (self + i) % s->count, 1);
    return item;
}

#endif
