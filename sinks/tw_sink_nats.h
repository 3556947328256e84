/*
 * tw_sink_nats.h: the NATS JetStream alert sink ("nats-alerts"): every alert is published to the
 * ALERTS stream on tw.alerts.<region>.<severity> with Nats-Msg-Id = alert_id (docs/scaling.md).
 */
#ifndef TW_SINK_NATS_H
#define TW_SINK_NATS_H

#include <stddef.h>

#include "tw_sink.h"

/*
 * tw_sink_nats_open: connect to the server at url (or a comma-separated list of a cluster's) and
 * create the ALERTS stream (subjects tw.alerts.>, file storage, `replicas` copies, duplicate
 * window TW_NATS_DUPLICATE_WINDOW_MS) unless it exists.
 * The sink's write publishes the alert's canonical JSON line and waits for the stream's
 * acknowledgement (at most 5 s; a timeout or a lost server is retried for about 30 s), so an alert handed over is stored before the next one; a repeat
 * of an alert_id within the window (an alert republished from the journal after a crash, or a
 * partition replayed elsewhere) is acknowledged as a duplicate and not stored again. write
 * returns 0, TW_EINVAL (no six-digit region or no severity: no subject) or TW_EIO (no
 * acknowledgement); flush has nothing to do.
 * Returns 0 with *out owned by the caller (vt->close), TW_EIO with the reason in errbuf, or
 * TW_ENOMEM.
 */
int tw_sink_nats_open(const char *url, int replicas, tw_sink_t **out, char *errbuf,
                      size_t errcap);

/* tw_sink_nats_duplicates: alerts the stream acknowledged as duplicates since open (0 for NULL
 * or another sink). */
unsigned long long tw_sink_nats_duplicates(const tw_sink_t *sink);

#endif
