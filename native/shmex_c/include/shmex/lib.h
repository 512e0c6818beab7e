/*
 * The part of Shmex's C API that NIFs and C nodes share, compatible with
 * Shmex 0.5.1's shmex/lib.h: the same names, signatures, struct layouts and
 * results. Include it through shmex/shmex.h, which picks the flavour: the
 * NIF one (SHMEX_NIF), or with SHMEX_CNODE defined, the C-node one. The
 * implementation is in Rust (libshmex.a for NIFs, libshmex_cnode.a for C
 * nodes); see the README, "Membrane and unifex" and "Native APIs".
 *
 * Where 0.5.1 crashed or corrupted memory, these return an error:
 *   - shmex_open_and_mmap checks the struct against the real segment
 *     (SHMEX_ERROR_INVALID_PAYLOAD when size > capacity or capacity exceeds
 *     the segment) and reserves the mapped pages first, so that a full
 *     /dev/shm is SHMEX_ERROR_FTRUNCATE with errno ENOSPC, not SIGBUS;
 *   - a NULL name is SHMEX_ERROR_INVALID_PAYLOAD wherever one is needed, and
 *     NULL pointers are no-ops in the functions returning void;
 *   - shmex_set_capacity refuses capacities over UINT_MAX (errno EFBIG);
 *   - shmex_unmap only unmaps mappings shmex_open_and_mmap made;
 *   - shmex_open_and_mmap on a struct that is mapped already returns
 *     SHMEX_ERROR_SHM_MAPPED instead of leaking the first mapping.
 *
 * A mapping survives its segment shrinking under it (another process
 * truncating it, or a hole that a full /dev/shm cannot fill): instead of
 * SIGBUS killing the VM, the whole mapping turns into private zeroed memory,
 * on which reads see zeros and writes are lost, and shmex_mapping_faulted
 * says so. Check it after working on the data, before trusting what was read.
 *
 * When shmex_open_and_mmap fails, mapped_memory still points at capacity
 * bytes of private zeroed memory (released by shmex_unmap and shmex_release,
 * like a mapping), so that code which does not check the result, as
 * unifex's unifex_payload_from_term does not, reads zeros rather than
 * crashing. A struct of capacity 0 maps nothing: mapped_memory is NULL.
 *
 * Error results set errno, which shmex_make_error_term reads.
 */
#pragma once

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>
#ifdef SHMEX_NIF
#include <erl_nif.h>
#endif
#ifdef SHMEX_CNODE
#include <ei.h>
#endif

#ifdef __cplusplus
extern "C" {
#endif

#ifndef NAME_MAX
#define NAME_MAX 255
#endif
#define SHMEX_ELIXIR_STRUCT_ENTRIES 5
#define SHMEX_ELIXIR_STRUCT_ATOM "Elixir.Shmex"
#define SHMEX_SHM_NAME_PREFIX "/shmex-"
#define SHMEX_ALLOC_MAX_ATTEMPTS 1000
#define SHMEX_SHM_NAME_PREFIX_LEN (sizeof(SHMEX_SHM_NAME_PREFIX) - 1)
#define SHMEX_SHM_NAME_TIME_ID_LEN 20
/* The size of a buffer for shmex_generate_shm_name: 31 bytes and a NUL. */
#define SHMEX_SHM_NAME_LEN 32

typedef struct {
  char *name;
  unsigned int size;
  unsigned int capacity;
  void *mapped_memory; /* MAP_FAILED when not mapped */
#ifdef SHMEX_NIF
  ERL_NIF_TERM guard;
#endif
#ifdef SHMEX_CNODE
  erlang_ref *guard; /* NULL for nil */
#endif
} Shmex;

typedef enum ShmexLibResult {
  SHMEX_RES_OK,
  SHMEX_ERROR_SHM_OPEN,
  SHMEX_ERROR_FTRUNCATE,
  SHMEX_ERROR_MMAP,
  SHMEX_ERROR_SHM_MAPPED,
  SHMEX_ERROR_INVALID_PAYLOAD
} ShmexLibResult;

/* Creates the segment (mode 0600, O_EXCL) of payload->capacity zero bytes,
 * named payload->name, or a fresh name (stored in payload->name, freed by
 * shmex_release) when that is NULL. */
ShmexLibResult shmex_allocate_unguarded(Shmex *payload);

/* Maps payload->capacity bytes of the segment, read-write and shared, into
 * payload->mapped_memory. Release with shmex_unmap or shmex_release. */
ShmexLibResult shmex_open_and_mmap(Shmex *payload);

/* Whether pages of payload's mapping were lost since it was mapped (the
 * segment shrank under it): 1 if so, 0 otherwise. Not in 0.5.1. */
int shmex_mapping_faulted(const Shmex *payload);

/* Resizes the segment to capacity bytes (refused while mapped), updating
 * capacity and clamping size. */
ShmexLibResult shmex_set_capacity(Shmex *payload, size_t capacity);

/* Unmaps, if mapped. */
void shmex_unmap(Shmex *payload);

/* Unlinks the segment; SHMEX_ERROR_INVALID_PAYLOAD when the name is NULL. */
ShmexLibResult shmex_unlink(Shmex *payload);

/* Unlinks the segment called name. */
void shmex_shm_unlink(char *name);

/* Writes a fresh, unique name into name, a buffer of SHMEX_SHM_NAME_LEN
 * bytes. attempt is ignored: every name is new. */
void shmex_generate_shm_name(char *name, int attempt);

/* "ok", "shm_open", "ftruncate", "mmap", "shm_is_mapped",
 * "invalid_payload", or "unknown". */
const char *shmex_lib_result_to_string(ShmexLibResult result);

#ifdef __cplusplus
}
#endif
