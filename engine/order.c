/*
 * order.c: the reorder buffer (see tw_order.h): a run of packed events already in order (a ring,
 * O(1) push and pop) and a binary min-heap for the rest. An event that does not sort before the
 * newest event of the run joins the run; any other goes to the heap (O(log n)); pop takes the
 * earlier of the run's oldest and the heap's top. A stream that arrives in order, the common
 * case, never touches the heap. Arrays grow geometrically and small blocks are recycled, so
 * memory is bounded by the events held.
 */
#include <stdlib.h>
#include <string.h>

#include "tw_error.h"
#include "tw_order.h"

/* Packed form: header, then one value per present slot (strings as offsets into the tail),
 * then the string bytes, each followed by a NUL. */
typedef struct packed {
  struct packed *next_free; /* free-list link while unused */
  size_t cap;               /* bytes available after this header */
  uint16_t type;
  uint16_t n_values;
  uint32_t str_bytes;
  int64_t ts_ms;
  uint64_t present;
  uint64_t arrival;
  uint32_t id_off, id_len; /* event_id, for ordering */
} packed_t;

typedef struct slot_value {
  uint8_t slot, kind;
  uint32_t len; /* strings: length; else 0 */
  int64_t i;    /* strings: offset into the string tail */
} slot_value_t;

struct tw_order {
  packed_t **heap;
  size_t n, cap;
  packed_t **run; /* ring of run_cap (a power of two) slots: run_n events from run_head, each
                     not before the previous */
  size_t run_head, run_n, run_cap;
  packed_t *free_small; /* recycled blocks of TW_ORDER_SMALL_BYTES */
};

static slot_value_t *values_of(packed_t *p) {
  return (slot_value_t *)(p + 1);
}

static char *strings_of(packed_t *p) {
  return (char *)(values_of(p) + p->n_values);
}

int tw_order_new(tw_order_t **out) {
  tw_order_t *o = calloc(1, sizeof *o);
  if (o == NULL) return TW_ENOMEM;
  *out = o;
  return 0;
}

static void block_free(tw_order_t *o, packed_t *p) {
  if (p->cap == TW_ORDER_SMALL_BYTES) {
    p->next_free = o->free_small;
    o->free_small = p;
  } else {
    free(p);
  }
}

/* The ring slot of the run's i-th oldest event (i ≤ run_n < run_cap). */
static packed_t **run_slot(const tw_order_t *o, size_t i) {
  return &o->run[(o->run_head + i) & (o->run_cap - 1)];
}

static packed_t *run_at(const tw_order_t *o, size_t i) {
  return *run_slot(o, i);
}

void tw_order_free(tw_order_t *o) {
  if (o == NULL) return;
  for (size_t i = 0; i < o->n; i++) free(o->heap[i]);
  for (size_t i = 0; i < o->run_n; i++) free(*run_slot(o, i));
  free(o->run);
  while (o->free_small != NULL) {
    packed_t *next = o->free_small->next_free;
    free(o->free_small);
    o->free_small = next;
  }
  free(o->heap);
  free(o);
}

size_t tw_order_size(const tw_order_t *o) {
  return o->n + o->run_n;
}

/* a before b? (ts, then event_id bytes, then arrival) */
static int before(const packed_t *a, const packed_t *b) {
  if (a->ts_ms != b->ts_ms) return a->ts_ms < b->ts_ms;
  const char *ia = (const char *)(values_of((packed_t *)a) + a->n_values) + a->id_off;
  const char *ib = (const char *)(values_of((packed_t *)b) + b->n_values) + b->id_off;
  uint32_t n = a->id_len < b->id_len ? a->id_len : b->id_len;
  int c = memcmp(ia, ib, n);
  if (c != 0) return c < 0;
  if (a->id_len != b->id_len) return a->id_len < b->id_len;
  return a->arrival < b->arrival;
}

static packed_t *pack(tw_order_t *o, const tw_event_t *ev, uint64_t arrival) {
  uint16_t n = 0;
  size_t str_bytes = 0;
  for (int s = 0; s < TW_MAX_FIELDS; s++) {
    if (!(ev->present & ((uint64_t)1 << s))) continue;
    n++;
    if (ev->f[s].kind == TW_V_STR) str_bytes += ev->f[s].u.s.len + 1;
  }
  size_t need = (size_t)n * sizeof(slot_value_t) + str_bytes;
  packed_t *p;
  if (need <= TW_ORDER_SMALL_BYTES && o->free_small != NULL) {
    p = o->free_small;
    o->free_small = p->next_free;
  } else {
    size_t cap = need <= TW_ORDER_SMALL_BYTES ? TW_ORDER_SMALL_BYTES : need;
    p = malloc(sizeof *p + cap);
    if (p == NULL) return NULL;
    p->cap = cap;
  }
  p->type = ev->type;
  p->n_values = n;
  p->str_bytes = (uint32_t)str_bytes;
  p->ts_ms = ev->ts_ms;
  p->present = ev->present;
  p->arrival = arrival;
  p->id_off = p->id_len = 0;
  slot_value_t *v = values_of(p);
  char *str = strings_of(p);
  size_t off = 0;
  for (int s = 0, k = 0; s < TW_MAX_FIELDS; s++) {
    if (!(ev->present & ((uint64_t)1 << s))) continue;
    const tw_value_t *f = &ev->f[s];
    v[k].slot = (uint8_t)s;
    v[k].kind = f->kind;
    if (f->kind == TW_V_STR) {
      memcpy(str + off, f->u.s.ptr, f->u.s.len);
      str[off + f->u.s.len] = '\0';
      v[k].len = f->u.s.len;
      v[k].i = (int64_t)off;
      if (s == TW_SLOT_EVENT_ID) p->id_off = (uint32_t)off, p->id_len = f->u.s.len;
      off += f->u.s.len + 1;
    } else {
      v[k].len = 0;
      v[k].i = f->u.i;
    }
    k++;
  }
  return p;
}

static void unpack(const packed_t *p, tw_event_t *ev) {
  const slot_value_t *v = values_of((packed_t *)p);
  memcpy(ev->arena, strings_of((packed_t *)p), p->str_bytes);
  ev->arena_used = p->str_bytes;
  ev->type = p->type;
  ev->ts_ms = p->ts_ms;
  ev->present = p->present;
  for (uint16_t k = 0; k < p->n_values; k++) {
    tw_value_t *f = &ev->f[v[k].slot];
    f->kind = v[k].kind;
    if (v[k].kind == TW_V_STR) {
      f->u.s.ptr = ev->arena + v[k].i;
      f->u.s.len = v[k].len;
    } else {
      f->u.i = v[k].i;
    }
  }
}

/* Room for one more event in the run (the ring unrolled into a larger array). */
static int run_reserve(tw_order_t *o) {
  if (o->run_n < o->run_cap) return 0;
  size_t cap = o->run_cap ? 2 * o->run_cap : 1024; /* a power of two: run_slot masks */
  packed_t **r = malloc(cap * sizeof *r);
  if (r == NULL) return TW_ENOMEM;
  for (size_t i = 0; i < o->run_n; i++) r[i] = run_at(o, i);
  free(o->run);
  o->run = r;
  o->run_cap = cap;
  o->run_head = 0;
  return 0;
}

static int heap_reserve(tw_order_t *o) {
  if (o->n < o->cap) return 0;
  size_t cap = o->cap ? 2 * o->cap : 1024;
  packed_t **h = realloc(o->heap, cap * sizeof *h);
  if (h == NULL) return TW_ENOMEM;
  o->heap = h;
  o->cap = cap;
  return 0;
}

int tw_order_push(tw_order_t *o, const tw_event_t *ev, uint64_t arrival) {
  /* Room in both first, so a failure leaves the buffer as it was. */
  if (run_reserve(o) != 0 || heap_reserve(o) != 0) return TW_ENOMEM;
  packed_t *p = pack(o, ev, arrival);
  if (p == NULL) return TW_ENOMEM;
  if (o->run_n == 0 || !before(p, run_at(o, o->run_n - 1))) {
    *run_slot(o, o->run_n) = p;
    o->run_n++;
    return 0;
  }
  size_t i = o->n++;
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (!before(p, o->heap[parent])) break;
    o->heap[i] = o->heap[parent];
    i = parent;
  }
  o->heap[i] = p;
  return 0;
}

/* Does the next event leave from the run (else from the heap)? The buffer is not empty. */
static int next_from_run(const tw_order_t *o) {
  if (o->run_n == 0) return 0;
  return o->n == 0 || before(run_at(o, 0), o->heap[0]);
}

int tw_order_peek_ts(const tw_order_t *o, int64_t *ts_ms) {
  if (o->n + o->run_n == 0) return TW_ENOENT;
  *ts_ms = next_from_run(o) ? run_at(o, 0)->ts_ms : o->heap[0]->ts_ms;
  return 0;
}

int tw_order_pop(tw_order_t *o, tw_event_t *ev, uint64_t *arrival) {
  if (o->n + o->run_n == 0) return TW_ENOENT;
  packed_t *top;
  if (next_from_run(o)) {
    top = run_at(o, 0);
    o->run_head = (o->run_head + 1) & (o->run_cap - 1);
    o->run_n--;
  } else {
    top = o->heap[0];
    packed_t *last = o->heap[--o->n];
    size_t i = 0;
    for (;;) {
      size_t c = 2 * i + 1;
      if (c >= o->n) break;
      if (c + 1 < o->n && before(o->heap[c + 1], o->heap[c])) c++;
      if (!before(o->heap[c], last)) break;
      o->heap[i] = o->heap[c];
      i = c;
    }
    if (o->n > 0) o->heap[i] = last;
  }
  unpack(top, ev);
  *arrival = top->arrival;
  block_free(o, top);
  return 0;
}
