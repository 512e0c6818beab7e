#include "payloads.h"

#include <string.h>

/* The sum of a payload's bytes, read in place (mapped, for a %Shmex{}). */
UNIFEX_TERM checksum(UnifexEnv *env, UnifexPayload *data) {
  uint64_t sum = 0;
  for (unsigned i = 0; i < data->size; i++) {
    sum += data->data[i];
  }
  return checksum_result_ok(env, sum);
}

/* A new payload of the same kind (binary or shared memory) with the bytes
 * in reverse order. */
UNIFEX_TERM reversed(UnifexEnv *env, UnifexPayload *data) {
  UnifexPayload out;
  if (!unifex_payload_alloc(env, data->type, data->size, &out)) {
    return unifex_raise(env, "allocation failed");
  }
  for (unsigned i = 0; i < data->size; i++) {
    out.data[i] = data->data[data->size - 1 - i];
  }
  UNIFEX_TERM result = reversed_result_ok(env, &out);
  unifex_payload_release(&out);
  return result;
}

/* A new payload of size bytes of byte, in shared memory or a binary. A C
 * node's payloads are binaries only (unifex's C-node payloads have no shared
 * memory). */
UNIFEX_TERM allocate(UnifexEnv *env, unsigned int size, unsigned int byte, int shared) {
  UnifexPayload out;
#ifdef BUNDLEX_NIF
  UnifexPayloadType type = shared ? UNIFEX_PAYLOAD_SHM : UNIFEX_PAYLOAD_BINARY;
#else
  if (shared) {
    return allocate_result_error(env, "unsupported");
  }
  UnifexPayloadType type = UNIFEX_PAYLOAD_BINARY;
#endif
  if (!unifex_payload_alloc(env, type, size, &out)) {
    return allocate_result_error(env, "alloc_failed");
  }
  memset(out.data, (int)byte, size);
  UNIFEX_TERM result = allocate_result_ok(env, &out);
  unifex_payload_release(&out);
  return result;
}

/* The payload's bytes in a new payload of the same kind, grown (or shrunk)
 * to size bytes with unifex_payload_realloc, new bytes zero. (unifex's
 * realloc of a shared-memory payload does not update its data pointer: it
 * is not touched afterwards. Grown shared memory reads as zeros already.) */
UNIFEX_TERM regrown(UnifexEnv *env, UnifexPayload *data, unsigned int size) {
#ifndef BUNDLEX_NIF
  UNIFEX_UNUSED(data);
  UNIFEX_UNUSED(size);
  return regrown_result_error(env, "unsupported");
#else
  UnifexPayload out;
  if (!unifex_payload_alloc(env, data->type, data->size, &out)) {
    return regrown_result_error(env, "alloc_failed");
  }
  memcpy(out.data, data->data, data->size);
  unsigned int old = data->size;
  if (!unifex_payload_realloc(&out, size)) {
    unifex_payload_release(&out);
    return regrown_result_error(env, "realloc_failed");
  }
  if (size > old && out.type == UNIFEX_PAYLOAD_BINARY) {
    memset(out.data + old, 0, size - old);
  }
  UNIFEX_TERM result = regrown_result_ok(env, &out);
  unifex_payload_release(&out);
  return result;
#endif
}
