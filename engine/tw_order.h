/*
 * tw_order.h: the reorder buffer that makes results independent of arrival order.
 *
 * Events wait here until the watermark passes their event time, then leave in event-time order
 * (ties broken by event_id bytes, then by arrival), so any arrival order within the allowed
 * lateness gives the same processing order, and so the same aggregates and alerts.
 *
 * An event is stored packed: its present values and their string bytes only (a few hundred
 * bytes, not the 64 KiB arena). Blocks of up to TW_ORDER_SMALL_BYTES are recycled through a
 * free list, so a steady stream allocates nothing after warm-up. Not thread-safe.
 */
#ifndef TW_ORDER_H
#define TW_ORDER_H

#include <stddef.h>
#include <stdint.h>

#include "tw_event.h"

#define TW_ORDER_SMALL_BYTES 1024 /* packed events up to this size reuse freed blocks */

typedef struct tw_order tw_order_t;

/* tw_order_new: an empty buffer. Returns 0 or TW_ENOMEM. */
int tw_order_new(tw_order_t **out);

/* tw_order_free: free the buffer and every event still in it; NULL accepted. */
void tw_order_free(tw_order_t *o);

/* tw_order_push: copy ev (packed) into the buffer with its arrival number.
 * Returns 0 or TW_ENOMEM. */
int tw_order_push(tw_order_t *o, const tw_event_t *ev, uint64_t arrival);

/* tw_order_size: events in the buffer. */
size_t tw_order_size(const tw_order_t *o);

/* tw_order_peek_ts: event time of the next event to leave; TW_ENOENT when empty. */
int tw_order_peek_ts(const tw_order_t *o, int64_t *ts_ms);

/* tw_order_pop: move the next event (earliest ts, then event_id, then arrival) into ev, which
 * must be tw_event_init-ed (its arena is overwritten), and give its arrival number.
 * Returns 0 or TW_ENOENT when empty. */
int tw_order_pop(tw_order_t *o, tw_event_t *ev, uint64_t *arrival);

#endif
