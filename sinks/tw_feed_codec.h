/*
 * tw_feed_codec.h: the payloads of the regulator and self-check feeds and of history replies.
 *
 * A feed payload is the alert with its feed sequence number as the first key:
 *
 *   regulator view:  {"seq":N,"alert_id":...}   the canonical alert JSON, every field
 *   self-check view: {"seq":N,"alert_id","rule","severity","institution_id","region",
 *                     "event_time","message","values","event_ids","source"} where the message
 *                     has numbers that look like phone, id or bank card numbers and other
 *                     institutions' credit codes masked, and values keeps only numbers and
 *                     booleans (a string value may be complaint text); "by" and "key" are left
 *                     out. Only alerts keyed by institution_id have a self-check view, and
 *                     escalations (rule "escalation", between regulators) have none.
 *
 * encoded as msgpack (a map, the default) or as one line of JSON. The regulator JSON view is the
 * journal's bytes with "seq" spliced in, byte for byte; everything else goes through jansson.
 */
#ifndef TW_FEED_CODEC_H
#define TW_FEED_CODEC_H

#include <stddef.h>
#include <stdint.h>

typedef enum tw_feed_format { TW_FEED_MSGPACK = 0, TW_FEED_JSON } tw_feed_format_t;

#define TW_FEED_PAYLOAD_MAX (64 * 1024) /* bytes of one encoded payload */
#define TW_FEED_DEPTH_MAX 16            /* nesting accepted when converting */

/* A growable output buffer, bounded by max (0 = TW_FEED_PAYLOAD_MAX). Owned by the caller:
 * tw_feed_buf_free. */
typedef struct tw_feed_buf {
  char *data;
  size_t len, cap, max;
} tw_feed_buf_t;
void tw_feed_buf_free(tw_feed_buf_t *b);
/* tw_feed_buf_put: append n bytes. Returns 0, TW_ETOOBIG past the bound, TW_ENOMEM. */
int tw_feed_buf_put(tw_feed_buf_t *b, const void *p, size_t n);

/*
 * tw_feed_payload: encode alert json[0..len) (canonical alert JSON) under sequence seq for the
 * regulator view (self_check 0) or the self-check view (1) into out (replacing its contents).
 * Returns 0; TW_ENOENT when the alert has no self-check view (not keyed by institution_id);
 * TW_EINVAL when json is not a JSON object; TW_ETOOBIG past out's bound; TW_ENOMEM.
 */
int tw_feed_payload(int self_check, tw_feed_format_t fmt, uint64_t seq, const char *json,
                    size_t len, tw_feed_buf_t *out);

/*
 * tw_feed_to_json: the JSON line (no newline) of a payload received from a feed or history,
 * whatever its encoding: a payload starting with '{' is copied, a msgpack map is converted
 * (floats printed in the shortest form that reads back the same). Appends to out. Returns 0;
 * TW_EINVAL (not one whole JSON object or msgpack map; non-string map keys; nesting over
 * TW_FEED_DEPTH_MAX); TW_ETOOBIG; TW_ENOMEM.
 */
int tw_feed_to_json(const char *data, size_t len, tw_feed_buf_t *out);

/*
 * tw_feed_payload_seq: the "seq" of a payload (JSON or msgpack), or 0 when it has none.
 */
uint64_t tw_feed_payload_seq(const char *data, size_t len);

/*
 * tw_feed_mask_text: mask in place, in s[0..len), digit runs of 11 or more (phone, id and bank
 * card numbers; an id number's final X included) and 18-character credit-code-shaped words other
 * than own_code (may be NULL): every character but the first 3 and the last 2 becomes '*'.
 * Returns how many runs were masked.
 */
size_t tw_feed_mask_text(char *s, size_t len, const char *own_code);

#endif
