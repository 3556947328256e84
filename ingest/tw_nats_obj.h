/*
 * tw_nats_obj.h: files in a NATS JetStream object store (the checkpoints of docs/scaling.md).
 *
 * libnats 3.4 has no object-store API, so this writes the object-store layout of the NATS
 * protocol (ADR-20) over plain JetStream, readable by other NATS tools: bucket B is the stream
 * OBJ_B on subjects $O.B.C.> (chunks) and $O.B.M.> (metadata; rollups allowed); an object is its
 * chunks (at most TW_NATS_OBJ_CHUNK_BYTES each) on $O.B.C.<nuid>, then one JSON metadata message on
 * $O.B.M.<base64url(name)> ("Nats-Rollup: sub" keeps only the newest) with name, bucket, nuid,
 * size, chunks, mtime, digest ("SHA-256=" + base64url, libsodium) and headers. Putting a name
 * again replaces it: the new chunks are written first, then the metadata, then the old chunks are
 * purged, so a reader sees the old object or the new one, never a mix.
 */
#ifndef TW_NATS_OBJ_H
#define TW_NATS_OBJ_H

#include <stddef.h>
#include <stdint.h>

#define TW_NATS_OBJ_CHUNK_BYTES (128u << 10)
#define TW_NATS_OBJ_NAME_MAX 128

/*
 * tw_nats_obj_bucket: create bucket (letters, digits, '-' and '_') unless it exists: the stream
 * OBJ_<bucket> (file storage, replicas copies, rollups allowed). Returns 0, TW_EINVAL or TW_EIO
 * (errbuf).
 */
int tw_nats_obj_bucket(void *js, const char *bucket, int replicas, char *errbuf, size_t errcap);

/*
 * tw_nats_obj_put: store the file at path as object name (1..TW_NATS_OBJ_NAME_MAX bytes) of
 * bucket, which must exist (tw_nats_obj_bucket; replicas is unused and kept for the callers).
 * tag (a number, e.g. the stream sequence a checkpoint covers) is kept in the metadata's headers
 * as Tw-Tag. The metadata is written by compare-and-set over the one read first
 * (Nats-Expected-Last-Subject-Sequence), and never over an object with a higher tag, so a writer
 * that fell behind cannot replace a newer object. js is a jsCtx*, borrowed. Returns 0; TW_EAGAIN
 * (the object holds a higher tag, or another writer wrote it meanwhile: nothing changed; errbuf
 * says which); TW_EINVAL; TW_EIO (the file cannot be read, or NATS: errbuf says which);
 * TW_ENOMEM. The chunks of a failed put are purged.
 */
int tw_nats_obj_put(void *js, const char *bucket, int replicas, const char *name, const char *path,
                    uint64_t tag, char *errbuf, size_t errcap);

/*
 * tw_nats_obj_info: *found = 1 and the object's tag and size (bytes) when bucket holds name;
 * *found = 0 when it does not (not an error). The bucket must exist (tw_nats_obj_bucket); reads
 * are direct gets, answered by any replica. Returns 0, TW_EINVAL, TW_EIO (errbuf; also a missing
 * bucket, or a metadata message that is not the layout above) or TW_ENOMEM.
 */
int tw_nats_obj_info(void *js, const char *bucket, const char *name, int *found, uint64_t *tag,
                     uint64_t *size_bytes, char *errbuf, size_t errcap);

/*
 * tw_nats_obj_get: write object name of bucket to path (created or truncated, mode 0600), reading
 * its chunks in order by direct gets (any replica answers; no consumer is made), and check the size and the
 * SHA-256 digest; on any failure the file is removed. Returns 0, TW_ENOENT (no such object),
 * TW_EIO (errbuf: NATS, the file, or a size or digest that does not match) or TW_ENOMEM.
 */
int tw_nats_obj_get(void *js, const char *bucket, const char *name, const char *path,
                    char *errbuf, size_t errcap);

#endif
