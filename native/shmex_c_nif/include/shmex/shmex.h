/*
 * Shmex's C API for NIFs, compatible with Shmex 0.5.1's shmex/shmex.h: the
 * same names, signatures, struct layouts, results and macros, so that C NIFs
 * written against 0.5.1 (unifex's payload code, the Membrane plugins built on
 * it) build and run unchanged. The shared functions and their guarantees are
 * in shmex/lib.h. Link with libshmex.a (and -lpthread -ldl -lm).
 *
 * Differences from 0.5.1, all where it crashed or leaked:
 *   - shmex_get_from_term refuses (returns 0) a term that is not a %Shmex{}
 *     struct, and sizes that do not fit the 32-bit fields of Shmex;
 *   - shmex_add_guard stores the name without its leading slashes, so that
 *     every name a segment can have fits the guard, and the segment's
 *     identity: shmex_guard_destructor does not unlink a segment that has
 *     replaced the guarded one under the same name.
 *
 * 0.5.1's header pulled in bunch_native's <bunch/bunch.h>; this one does not
 * need it (PARSE_SHMEX_ARG raises through shmex_raise_bad_argument), and
 * includes it when it is on the include path, for code that relied on it.
 */
#pragma once

#ifndef SHMEX_NIF
#define SHMEX_NIF
#endif

#include <erl_nif.h>

#include "lib.h"

#if defined(__has_include)
#if __has_include(<bunch/bunch.h>)
#include <bunch/bunch.h>
#endif
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* The payload of a guard resource; register a resource type with
 * shmex_guard_destructor as its destructor. The name is stored without its
 * leading slashes; identity is the guarded file's device and inode. */
typedef struct _ShmexGuard {
  char name[NAME_MAX + 1];
  uint64_t identity[2];
} ShmexGuard;

/* guard = nil, size 0, the given capacity, not mapped, name NULL. */
void shmex_init(ErlNifEnv *env, Shmex *payload, unsigned capacity);

/* shmex_allocate_unguarded, then shmex_add_guard with guard_type. */
ShmexLibResult shmex_allocate(ErlNifEnv *env, ErlNifResourceType *guard_type,
                              Shmex *payload);

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

/* Raises an ArgumentError saying that argument is not a %Shmex{} struct;
 * what PARSE_SHMEX_ARG returns. Not in 0.5.1. */
ERL_NIF_TERM shmex_raise_bad_argument(ErlNifEnv *env, const char *argument);

/* In a NIF function with `env` and `argv`: declares `Shmex var_name` filled
 * from argv[position], or returns an ArgumentError. Pair with shmex_release. */
#define PARSE_SHMEX_ARG(position, var_name)                                    \
  Shmex var_name;                                                              \
  if (!shmex_get_from_term(env, argv[position], &var_name)) {                  \
    return shmex_raise_bad_argument(env, #var_name);                           \
  }

#ifdef __cplusplus
}
#endif
