/*
 * tw_pseudo.h: pseudonymisation of personal identifiers at ingest (PIPL Art. 28 and 51: data on
 * minors is sensitive; de-identify it).
 *
 * Fields of kind TW_FK_PSEUDONYM (student_id) are replaced, before anything stores or logs them,
 * by "p:" + 32 lowercase hex of a keyed BLAKE2b-128 hash (libsodium crypto_generichash) of the
 * raw value. The 32-byte key is a secret kept beside the state (DIR/pseudonym.key, mode 0600),
 * created on first use, so the same student maps to the same pseudonym across runs on one state
 * and nobody without the key can reverse or test a guess.
 */
#ifndef TW_PSEUDO_H
#define TW_PSEUDO_H

#include <stddef.h>
#include <stdint.h>

#include "tw_event.h"

#define TW_PSEUDO_KEY_BYTES 32
#define TW_PSEUDO_LEN 34 /* "p:" + 32 hex characters */

typedef struct tw_pseudo_key {
  uint8_t key[TW_PSEUDO_KEY_BYTES];
} tw_pseudo_key_t;

/*
 * tw_pseudo_key_load: read DIR/pseudonym.key, or create it (random, mode 0600) if absent.
 * Returns 0; TW_EIO when the file cannot be read/written or has the wrong size; TW_ECRYPTO when
 * libsodium cannot initialise.
 */
int tw_pseudo_key_load(const char *dir, tw_pseudo_key_t *out);

/*
 * tw_pseudo_key_read: read DIR/pseudonym.key without creating it. Returns 0, TW_ENOENT (absent;
 * *out zeroed), TW_EIO (unreadable or the wrong size), TW_ECRYPTO.
 */
int tw_pseudo_key_read(const char *dir, tw_pseudo_key_t *out);

/*
 * tw_pseudo_key_install: when DIR/pseudonym.key is absent, put key there (mode 0600, written
 * whole, as tw_pseudo_key_load creates one); then read into *out the key in place, which is not
 * key when the file already existed or another process installed its own first: compare them.
 * Used by the engines of a NATS group, which share one key (docs/scaling.md). Errors as
 * tw_pseudo_key_load.
 */
int tw_pseudo_key_install(const char *dir, const tw_pseudo_key_t *key, tw_pseudo_key_t *out);

/* tw_pseudo_hash: write the pseudonym of in[0..len) to out (TW_PSEUDO_LEN bytes + NUL). */
void tw_pseudo_hash(const tw_pseudo_key_t *key, const char *in, size_t len,
                    char out[TW_PSEUDO_LEN + 1]);

/*
 * tw_pseudo_apply: replace every present TW_FK_PSEUDONYM field of ev by its pseudonym, in the
 * event's arena. Returns 0, or TW_ETOOBIG when the arena has no room (cannot happen for events
 * within TW_EVENT_MAX_BYTES).
 */
int tw_pseudo_apply(const tw_pseudo_key_t *key, const tw_schema_t *schema, tw_event_t *ev);

#endif
