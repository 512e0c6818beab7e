/*
 * Shmex's C API for NIFs, compatible with Shmex 0.5.1's shmex/lib.h (NIF
 * flavour): the same names, signatures, struct layouts and results, so that
 * C NIFs written against 0.5.1 (unifex's payload code, for one) build and run
 * unchanged. Implemented in Rust; link with libshmex.a (and -lpthread -ldl -lm).
 *
 * Where 0.5.1 crashed or corrupted memory, this library returns an error:
 *   - shmex_open_and_mmap checks the struct against the real segment
 *     (SHMEX_ERROR_INVALID_PAYLOAD when size > capacity or capacity exceeds
 *     the segment) and reserves the mapped pages first, so a full /dev/shm is
 *     SHMEX_ERROR_FTRUNCATE with errno ENOSPC instead of SIGBUS on first touch;
 *   - a NULL name is SHMEX_ERROR_INVALID_PAYLOAD wherever one is needed, and
 *     NULL pointers are no-ops in the functions returning void;
 *   - shmex_get_from_term refuses (returns 0) a term that is not a %Shmex{}
 *     struct, and sizes that do not fit the 32-bit fields of this struct;
 *   - shmex_set_capacity refuses capacities over UINT_MAX (errno EFBIG);
 *   - shmex_unmap only unmaps mappings shmex_open_and_mmap made;
 *   - shmex_open_and_mmap on a struct that is mapped already returns
 *     SHMEX_ERROR_SHM_MAPPED instead of leaking the first mapping.
 * A struct of capacity 0 maps nothing: mapped_memory is NULL, and 0 bytes may
 * be touched.
 *
 * Error results set errno, which shmex_make_error_term reads.
 */
#pragma once

#include <erl_nif.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define NAME_MAX 255
#define SHMEX_ELIXIR_STRUCT_ENTRIES 5
#define SHMEX_ELIXIR_STRUCT_ATOM "Elixir.Shmex"
#define SHMEX_SHM_NAME_PREFIX "/shmex-"
#define SHMEX_ALLOC_MAX_ATTEMPTS 1000
/* The size of a buffer for shmex_generate_shm_name: 31 bytes and a NUL. */
#define SHMEX_SHM_NAME_LEN 32

typedef struct {
  char *name;
  unsigned int size;
  unsigned int capacity;
  void *mapped_memory; /* MAP_FAILED when not mapped */
  ERL_NIF_TERM guard;
} Shmex;

typedef enum ShmexLibResult {
  SHMEX_RES_OK,
  SHMEX_ERROR_SHM_OPEN,
  SHMEX_ERROR_FTRUNCATE,
  SHMEX_ERROR_MMAP,
  SHMEX_ERROR_SHM_MAPPED,
  SHMEX_ERROR_INVALID_PAYLOAD
} ShmexLibResult;

/* The payload of a guard resource; register a resource type of this size
 * with shmex_guard_destructor as its destructor. */
typedef struct _ShmexGuard {
  char name[NAME_MAX + 1];
} ShmexGuard;

/* guard = nil, size 0, the given capacity, not mapped, name NULL. */
void shmex_init(ErlNifEnv *env, Shmex *payload, unsigned capacity);

/* shmex_allocate_unguarded, then shmex_add_guard with guard_type. */
ShmexLibResult shmex_allocate(ErlNifEnv *env, ErlNifResourceType *guard_type,
                              Shmex *payload);

/* Creates the segment (mode 0600, O_EXCL) of payload->capacity zero bytes,
 * named payload->name, or a fresh name (stored in payload->name, freed by
 * shmex_release) when that is NULL. */
ShmexLibResult shmex_allocate_unguarded(Shmex *payload);

/* Makes a guard resource of guard_type holding payload->name, and stores it
 * in payload->guard: collecting it unlinks the segment. */
void shmex_add_guard(ErlNifEnv *env, ErlNifResourceType *guard_type,
                     Shmex *payload);

/* Unlinks the segment a ShmexGuard names: the destructor for guard types. */
void shmex_guard_destructor(ErlNifEnv *env, void *resource);

/* Fills payload from a %Shmex{} term (name copied, or NULL for nil; not
 * mapped). 1 on success, 0 otherwise. Pair with shmex_release. */
int shmex_get_from_term(ErlNifEnv *env, ERL_NIF_TERM record, Shmex *payload);

/* Frees the name and unmaps; does not unlink. */
void shmex_release(Shmex *payload);

/* The %Shmex{} term for payload. */
ERL_NIF_TERM shmex_make_term(ErlNifEnv *env, Shmex *payload);

/* {:error, {errno, :shm_open | :ftruncate | :mmap}} (errno read from errno),
 * or {:error, :invalid_payload}; raises for SHMEX_RES_OK and
 * SHMEX_ERROR_SHM_MAPPED. */
ERL_NIF_TERM shmex_make_error_term(ErlNifEnv *env, ShmexLibResult result);

/* Maps payload->capacity bytes of the segment, read-write and shared, into
 * payload->mapped_memory. Release with shmex_unmap or shmex_release. */
ShmexLibResult shmex_open_and_mmap(Shmex *payload);

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
