/*
 * tw_sink_zmq.h: what the ZeroMQ regulator feed ("zmq-pub" sink) exposes beyond tw_sink_vt_t.
 */
#ifndef TW_SINK_ZMQ_H
#define TW_SINK_ZMQ_H

#include <stdint.h>

#include "tw_sink.h"

/*
 * tw_sink_zmq_pub_dropped: alerts the feed refused since open because a subscriber whose
 * subscription matched them was at its high-water mark (100,000 messages). Alerts published
 * while nobody subscribes to their topic are not drops (nobody was owed them) and not counted.
 * Returns 0 for NULL or for a sink that is not "zmq-pub". Same thread as the sink's other calls.
 */
uint64_t tw_sink_zmq_pub_dropped(tw_sink_t *sink);

#endif
