#include "net/frame.h"

#include <stdlib.h>
#include <string.h>

#include "util/error.h"

/* The payload buffer starts at this size and doubles as bytes arrive, up to
 * the announced length. A buffer no larger than this is kept for the next
 * frame and a larger one is freed, so an idle decoder keeps at most this
 * much allocated. */
#define FRAME_INITIAL_CAPACITY (4u * 1024u)

void fedc_frame_decoder_init(fedc_frame_decoder *dec, uint32_t max_len)
{
  memset(dec, 0, sizeof(*dec));
  dec->max_len = max_len != 0 ? max_len : FEDC_FRAME_DEFAULT_MAX;
}

void fedc_frame_decoder_set_max(fedc_frame_decoder *dec, uint32_t max_len)
{
  dec->max_len = max_len != 0 ? max_len : FEDC_FRAME_DEFAULT_MAX;
}

void fedc_frame_decoder_close(fedc_frame_decoder *dec)
{
  free(dec->payload);
  dec->payload = NULL;
  dec->capacity = 0;
  dec->header_len = 0;
  dec->payload_have = 0;
  dec->complete = 0;
}

/* Forgets the frame handed out by the previous feed. */
static void decoder_reset_frame(fedc_frame_decoder *dec)
{
  dec->complete = 0;
  dec->header_len = 0;
  dec->payload_len = 0;
  dec->payload_have = 0;
  if (dec->capacity > FRAME_INITIAL_CAPACITY) {
    free(dec->payload);
    dec->payload = NULL;
    dec->capacity = 0;
  }
}

/* Validates the announced length once the header is complete. */
static int decoder_check_header(fedc_frame_decoder *dec)
{
  uint32_t len = (uint32_t)dec->header[0] << 24 |
                 (uint32_t)dec->header[1] << 16 |
                 (uint32_t)dec->header[2] << 8 |
                 (uint32_t)dec->header[3];

  dec->payload_len = len;
  if (len == 0)
    return FEDC_EFORMAT;
  if (len > dec->max_len)
    return FEDC_ETOOBIG;
  return 0;
}

/* Makes room for at least `need` payload bytes, doubling the buffer but
 * never past the announced length. */
static int decoder_reserve(fedc_frame_decoder *dec, size_t need)
{
  size_t capacity = dec->capacity != 0 ? dec->capacity : FRAME_INITIAL_CAPACITY;
  uint8_t *grown;

  if (need <= dec->capacity)
    return 0;
  while (capacity < need)
    capacity *= 2;
  if (capacity > dec->payload_len)
    capacity = dec->payload_len;

  grown = realloc(dec->payload, capacity);
  if (grown == NULL)
    return FEDC_ENOMEM;
  dec->payload = grown;
  dec->capacity = capacity;
  return 0;
}

/* Copies header bytes until the header is complete, then validates it.
 * Returns the number of bytes used, or a negative FEDC_E* code. */
static long decoder_take_header(fedc_frame_decoder *dec, const uint8_t *data,
                                size_t len)
{
  size_t used = 0;
  int rc;

  while (dec->header_len < FEDC_FRAME_HEADER_SIZE && used < len)
    dec->header[dec->header_len++] = data[used++];
  if (dec->header_len == FEDC_FRAME_HEADER_SIZE) {
    rc = decoder_check_header(dec);
    if (rc < 0)
      return rc;
  }
  return (long)used;
}

int fedc_frame_decoder_feed(fedc_frame_decoder *dec, const uint8_t *data,
                            size_t len, size_t *consumed)
{
  size_t used = 0;
  size_t take;
  long n;
  int rc;

  *consumed = 0;
  if (dec->error < 0)
    return dec->error;
  if (dec->complete)
    decoder_reset_frame(dec);

  if (dec->header_len < FEDC_FRAME_HEADER_SIZE) {
    n = decoder_take_header(dec, data, len);
    if (n < 0) {
      dec->error = (int)n;
      return dec->error;
    }
    used = (size_t)n;
    *consumed = used;
    if (dec->header_len < FEDC_FRAME_HEADER_SIZE)
      return 0;
  }

  take = dec->payload_len - dec->payload_have;
  if (take > len - used)
    take = len - used;
  if (take > 0) {
    rc = decoder_reserve(dec, dec->payload_have + take);
    if (rc < 0) {
      dec->error = rc;
      return rc;
    }
    memcpy(dec->payload + dec->payload_have, data + used, take);
    dec->payload_have += take;
    *consumed = used + take;
  }

  if (dec->payload_have < dec->payload_len)
    return 0;
  dec->complete = 1;
  return 1;
}

const uint8_t *fedc_frame_decoder_payload(const fedc_frame_decoder *dec,
                                          size_t *len)
{
  if (!dec->complete) {
    *len = 0;
    return NULL;
  }
  *len = dec->payload_len;
  return dec->payload;
}

int fedc_frame_pack(const Fedc__Envelope *env, uint32_t max_len,
                    uint8_t **out, size_t *out_len)
{
  size_t size;
  uint8_t *buf;

  *out = NULL;
  *out_len = 0;
  if (max_len == 0)
    max_len = FEDC_FRAME_DEFAULT_MAX;
  if (env->body_case == FEDC__ENVELOPE__BODY__NOT_SET)
    return FEDC_EINVAL;

  size = fedc__envelope__get_packed_size(env);
  if (size == 0 || size > max_len)
    return FEDC_ETOOBIG;
  buf = malloc(FEDC_FRAME_HEADER_SIZE + size);
  if (buf == NULL)
    return FEDC_ENOMEM;

  buf[0] = (uint8_t)(size >> 24);
  buf[1] = (uint8_t)(size >> 16);
  buf[2] = (uint8_t)(size >> 8);
  buf[3] = (uint8_t)size;
  fedc__envelope__pack(env, buf + FEDC_FRAME_HEADER_SIZE);
  *out = buf;
  *out_len = FEDC_FRAME_HEADER_SIZE + size;
  return 0;
}

/* Allocation budget of one fedc_frame_unpack() call. */
struct unpack_budget {
  size_t left;        /* bytes that may still be allocated */
  int exceeded;       /* 1 once an allocation was refused */
  int out_of_memory;  /* 1 once malloc failed */
};

/* protobuf-c allocates through these during unpacking. Frees do not give
 * bytes back to the budget: they only happen when unpacking fails. The
 * memory comes from malloc, so fedc_frame_envelope_free() releases it
 * with protobuf-c's default allocator. */
static void *budget_alloc(void *data, size_t size)
{
  struct unpack_budget *budget = data;
  void *pointer;

  if (size > budget->left) {
    budget->exceeded = 1;
    return NULL;
  }
  budget->left -= size;
  pointer = malloc(size != 0 ? size : 1);
  if (pointer == NULL)
    budget->out_of_memory = 1;
  return pointer;
}

static void budget_free(void *data, void *pointer)
{
  (void)data;
  free(pointer);
}

size_t fedc_frame_unpack_budget(size_t len)
{
  if (len > (SIZE_MAX - FEDC_FRAME_UNPACK_SLACK) / FEDC_FRAME_UNPACK_FACTOR)
    return SIZE_MAX;
  return FEDC_FRAME_UNPACK_FACTOR * len + FEDC_FRAME_UNPACK_SLACK;
}

int fedc_frame_unpack(const uint8_t *payload, size_t len,
                      Fedc__Envelope **out)
{
  struct unpack_budget budget = { fedc_frame_unpack_budget(len), 0, 0 };
  ProtobufCAllocator allocator = { budget_alloc, budget_free, &budget };
  Fedc__Envelope *env;

  *out = NULL;
  env = fedc__envelope__unpack(&allocator, len, payload);
  if (env == NULL && budget.exceeded)
    return FEDC_ETOOBIG;
  if (env == NULL)
    return budget.out_of_memory ? FEDC_ENOMEM : FEDC_EFORMAT;
  if (env->protocol_version != FEDC_FRAME_PROTOCOL_VERSION ||
      env->body_case == FEDC__ENVELOPE__BODY__NOT_SET) {
    fedc__envelope__free_unpacked(env, NULL);
    return FEDC_EVERSION;
  }
  *out = env;
  return 0;
}

void fedc_frame_envelope_free(Fedc__Envelope **env)
{
  if (env == NULL || *env == NULL)
    return;
  fedc__envelope__free_unpacked(*env, NULL);
  *env = NULL;
}
