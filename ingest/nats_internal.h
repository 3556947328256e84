/*
 * nats_internal.h: what the NATS files (ingest/nats.c, ingest/nats_obj.c, ingest/nats_group.c,
 * sinks/nats_alerts.c) share; not a public interface.
 */
#ifndef TW_NATS_INTERNAL_H
#define TW_NATS_INTERNAL_H

#include <nats/nats.h>
#include <stddef.h>

#define TW_NATS_MS_TO_NS 1000000LL

/* tw__nats_err: "what: <the library's last error or the status text> (JetStream error N)". */
void tw__nats_err(char *errbuf, size_t errcap, const char *what, natsStatus s, jsErrCode jerr);

/* tw__nats_transient: a failure that another attempt may not meet (timeout, no responders during
 * a leader election, a connection being replaced by another server of the cluster). */
int tw__nats_transient(natsStatus s);

/* tw__nats_connect: connect to url (a comma-separated list for a cluster), 2 s connect timeout,
 * reconnecting to the cluster's other servers for about 30 s, and make a JetStream context (API
 * requests wait 5 s). Returns 0, TW_EIO (errbuf says why) or TW_ENOMEM; *nc, *js are the
 * caller's (jsCtx_Destroy, natsConnection_Destroy). */
int tw__nats_connect(const char *url, natsConnection **nc, jsCtx **js, char *errbuf,
                     size_t errcap);

/* tw__nats_ensure_stream: create stream name on subjects (file storage, replicas copies, duplicate
 * window TW_NATS_DUPLICATE_WINDOW_MS) unless it exists; an existing stream is used as it is.
 * Returns 0 or TW_EIO (errbuf). */
int tw__nats_ensure_stream(jsCtx *js, const char *name, const char *subjects, int replicas,
                           char *errbuf, size_t errcap);

/* tw__nats_ensure_stream_desc: tw__nats_ensure_stream with the stream's description (NULL:
 * none) when it creates it. */
int tw__nats_ensure_stream_desc(jsCtx *js, const char *name, const char *subjects, int replicas,
                                const char *description, char *errbuf, size_t errcap);

/* tw__nats_events_stream: ensure stream EVENTS (tw.events.>) with "partitions=P" in its
 * description, and check that an existing one was made with the same P (a stream made before
 * the description was kept is accepted as it is). Returns 0, TW_EINVAL (another P; errbuf says
 * which) or TW_EIO (errbuf). */
int tw__nats_events_stream(jsCtx *js, int partitions, int replicas, char *errbuf, size_t errcap);

/* tw__nats_consumer_subject: the inbox subject of the consumer's pull subscription (for tests
 * that answer a pull request of their own into it); NULL for NULL. Borrowed from the consumer. */
struct tw_nats_consumer;
const char *tw__nats_consumer_subject(const struct tw_nats_consumer *c);

/* tw__nats_consumer_queued: messages that reached the pull subscription and no fetch has taken
 * yet (answers to pull requests that expired here); 0 for NULL. */
int tw__nats_consumer_queued(const struct tw_nats_consumer *c);

#endif
