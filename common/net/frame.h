/* Framing of the wire protocol: a 4-byte big-endian length, then that many
 * bytes of one serialized fedc.Envelope.
 *
 * The decoder is incremental: it accepts byte slices of any size, down to one
 * byte, and yields one complete frame payload at a time. It rejects a length
 * above its configured maximum before allocating anything for the payload,
 * and it grows the payload buffer only as bytes arrive, so a peer that
 * announces a large frame and then stalls costs little memory. */
#ifndef FEDC_NET_FRAME_H
#define FEDC_NET_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "fedc.pb-c.h"

/* Size of the length prefix in bytes. */
#define FEDC_FRAME_HEADER_SIZE 4

/* The only Envelope.protocol_version this build speaks. */
#define FEDC_FRAME_PROTOCOL_VERSION 1u

/* Default maximum payload size: room for a tensor chunk of a few MiB plus
 * its message fields. */
#define FEDC_FRAME_DEFAULT_MAX (16u * 1024u * 1024u)

/* Memory that fedc_frame_unpack() may allocate for a payload of n bytes is
 * FEDC_FRAME_UNPACK_FACTOR * n + FEDC_FRAME_UNPACK_SLACK. Measured with
 * protobuf-c 1.4: a TensorChunk needs 1.0 times its payload, Hello about 5
 * times, and a list of tensor specs 4 to 5 times (14 times for scalars
 * with one-letter names, which the slack covers up to about 10,000
 * specs). A FitResult of empty specs needs about 50 times, which is how a
 * 16 MiB frame once cost 838 MB. */
#define FEDC_FRAME_UNPACK_FACTOR 8u
#define FEDC_FRAME_UNPACK_SLACK (1024u * 1024u)

typedef struct fedc_frame_decoder {
  /* read-only after fedc_frame_decoder_init() */
  uint32_t max_len;

  /* private */
  uint8_t header[FEDC_FRAME_HEADER_SIZE];
  size_t header_len;     /* header bytes received so far */
  uint32_t payload_len;  /* announced length, also kept when rejected */
  size_t payload_have;   /* payload bytes received so far */
  uint8_t *payload;
  size_t capacity;       /* allocated size of payload */
  int complete;          /* 1 after a frame completed, until the next feed */
  int error;             /* the first error, returned by every later feed */
} fedc_frame_decoder;

/* Prepares a decoder that accepts payloads of 1 to max_len bytes; a max_len
 * of 0 selects FEDC_FRAME_DEFAULT_MAX. */
void fedc_frame_decoder_init(fedc_frame_decoder *dec, uint32_t max_len);

/* Sets the largest payload accepted from the next frame header on; 0
 * selects FEDC_FRAME_DEFAULT_MAX. A frame whose header was already read
 * keeps the limit it was checked against. */
void fedc_frame_decoder_set_max(fedc_frame_decoder *dec, uint32_t max_len);

/* Releases the decoder's buffer. Safe to call twice. */
void fedc_frame_decoder_close(fedc_frame_decoder *dec);

/* Consumes bytes from data[0..len) until one frame completes or the bytes
 * run out, and stores the number of bytes used in *consumed. Returns 1 when
 * a frame completed (read it with fedc_frame_decoder_payload()), 0 when more
 * bytes are needed, FEDC_ETOOBIG for a length above max_len, FEDC_EFORMAT
 * for a zero length, or FEDC_ENOMEM. After an error the stream is out of
 * sync, and every later feed returns the same error. */
int fedc_frame_decoder_feed(fedc_frame_decoder *dec, const uint8_t *data,
                            size_t len, size_t *consumed);

/* Returns the payload of the frame that the last feed completed and stores
 * its length in *len, or returns NULL if the last feed completed none. The
 * pointer stays valid until the next feed or close. */
const uint8_t *fedc_frame_decoder_payload(const fedc_frame_decoder *dec,
                                          size_t *len);

/* Serializes env with protobuf-c and prefixes the length. On success *out
 * is a malloc'd buffer of *out_len bytes that the caller frees with free().
 * Returns FEDC_ETOOBIG if the payload would exceed max_len (0 selects
 * FEDC_FRAME_DEFAULT_MAX), FEDC_EINVAL for an Envelope without a body, or
 * FEDC_ENOMEM. */
int fedc_frame_pack(const Fedc__Envelope *env, uint32_t max_len,
                    uint8_t **out, size_t *out_len);

/* Deserializes one frame payload. On success *out must be released with
 * fedc_frame_envelope_free(). Returns FEDC_EFORMAT if the bytes are not an
 * Envelope, FEDC_ETOOBIG if decoding them would allocate more than
 * fedc_frame_unpack_budget(len) bytes (nothing stays allocated then),
 * FEDC_ENOMEM, and FEDC_EVERSION if protocol_version is not FEDC_FRAME_PROTOCOL_VERSION
 * or the body is missing: a newer peer's message type that this build does
 * not know parses as an empty body. */
int fedc_frame_unpack(const uint8_t *payload, size_t len,
                      Fedc__Envelope **out);

/* Returns the bytes that fedc_frame_unpack() may allocate for a payload of
 * len bytes (see FEDC_FRAME_UNPACK_FACTOR). */
size_t fedc_frame_unpack_budget(size_t len);

/* Frees an Envelope from fedc_frame_unpack() and sets *env to NULL.
 * Accepts NULL and a pointer to NULL. */
void fedc_frame_envelope_free(Fedc__Envelope **env);

#endif
