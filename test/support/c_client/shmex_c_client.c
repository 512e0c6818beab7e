/*
 * A C NIF written against Shmex 0.5.1's C API (shmex/shmex.h), the way
 * unifex's payload code uses it: its own guard resource type with
 * shmex_guard_destructor, segments allocated from C, structs from Elixir
 * parsed and mapped. The test setup compiles it against the installed
 * headers and links it with libshmex.a; ShmexCClient.Nif loads it.
 */
#define _POSIX_C_SOURCE 200809L /* mkstemp, ftruncate under -std=c11 */

#include <errno.h>
#include <erl_nif.h>
#include <shmex/shmex.h>

static ErlNifResourceType *GUARD_TYPE;

static int load(ErlNifEnv *env, void **priv, ERL_NIF_TERM info) {
  (void)priv;
  (void)info;
  int flags = ERL_NIF_RT_CREATE | ERL_NIF_RT_TAKEOVER;
  GUARD_TYPE = enif_open_resource_type(env, NULL, "CClientGuard",
                                       shmex_guard_destructor, flags, NULL);
  return GUARD_TYPE == NULL;
}

static ERL_NIF_TERM ok(ErlNifEnv *env, ERL_NIF_TERM value) {
  return enif_make_tuple2(env, enif_make_atom(env, "ok"), value);
}

static ERL_NIF_TERM result_atom(ErlNifEnv *env, ShmexLibResult result) {
  return enif_make_atom(env, shmex_lib_result_to_string(result));
}

/* allocate(capacity, byte): a new guarded segment filled with byte. */
static ERL_NIF_TERM allocate(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  unsigned capacity, byte;
  if (!enif_get_uint(env, argv[0], &capacity) || !enif_get_uint(env, argv[1], &byte)) {
    return enif_make_badarg(env);
  }
  Shmex shmex;
  shmex_init(env, &shmex, capacity);
  ShmexLibResult result = shmex_allocate(env, GUARD_TYPE, &shmex);
  if (result == SHMEX_RES_OK) {
    result = shmex_open_and_mmap(&shmex);
  }
  ERL_NIF_TERM answer;
  if (result == SHMEX_RES_OK) {
    memset(shmex.mapped_memory, (int)byte, capacity);
    shmex.size = capacity;
    answer = ok(env, shmex_make_term(env, &shmex));
  } else {
    answer = shmex_make_error_term(env, result);
  }
  shmex_release(&shmex);
  return answer;
}

/* checksum(shm): the sum of the data's bytes, read through a mapping;
 * {:error, :invalid_payload} if the segment shrank under the mapping. */
static ERL_NIF_TERM checksum(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  PARSE_SHMEX_ARG(0, shmex);
  ShmexLibResult result = shmex_open_and_mmap(&shmex);
  ERL_NIF_TERM answer;
  if (result == SHMEX_RES_OK) {
    unsigned long sum = 0;
    for (unsigned i = 0; i < shmex.size; i++) {
      sum += ((volatile unsigned char *)shmex.mapped_memory)[i];
    }
    answer = shmex_mapping_faulted(&shmex)
                 ? shmex_make_error_term(env, SHMEX_ERROR_INVALID_PAYLOAD)
                 : ok(env, enif_make_ulong(env, sum));
  } else {
    answer = shmex_make_error_term(env, result);
  }
  shmex_release(&shmex);
  return answer;
}

/* allocate_named(name, capacity): a new guarded segment under that name. */
static ERL_NIF_TERM allocate_named(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  ErlNifBinary name;
  unsigned capacity;
  if (!enif_inspect_binary(env, argv[0], &name) || !enif_get_uint(env, argv[1], &capacity)) {
    return enif_make_badarg(env);
  }
  Shmex shmex;
  shmex_init(env, &shmex, capacity);
  shmex.name = calloc(name.size + 1, 1);
  memcpy(shmex.name, name.data, name.size);
  ShmexLibResult result = shmex_allocate(env, GUARD_TYPE, &shmex);
  ERL_NIF_TERM answer = result == SHMEX_RES_OK ? ok(env, shmex_make_term(env, &shmex))
                                               : shmex_make_error_term(env, result);
  shmex_release(&shmex);
  return answer;
}

/* unguarded_sigbus(): a SIGBUS in a mapping this library did not make (a
 * file shrunk under a mapping of its own): it must reach the default action
 * and end the VM, whatever handlers the shmex libraries installed. */
static ERL_NIF_TERM unguarded_sigbus(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  (void)argv;
  char path[] = "/tmp/shmex-sigbus-XXXXXX";
  int fd = mkstemp(path);
  if (fd < 0 || ftruncate(fd, 4096) != 0) {
    return enif_make_badarg(env);
  }
  volatile char *memory = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  unlink(path);
  if (memory == MAP_FAILED || ftruncate(fd, 0) != 0) {
    return enif_make_badarg(env);
  }
  memory[0] = 1; /* SIGBUS */
  return enif_make_atom(env, "survived");
}

/* write(shm, binary): as unifex reallocates a payload: unmap, resize, map. */
static ERL_NIF_TERM write_data(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  Shmex shmex;
  ErlNifBinary data;
  if (!enif_inspect_binary(env, argv[1], &data) || !shmex_get_from_term(env, argv[0], &shmex)) {
    return enif_make_badarg(env);
  }
  ShmexLibResult result = SHMEX_RES_OK;
  if (shmex.capacity < data.size) {
    result = shmex_set_capacity(&shmex, data.size);
  }
  if (result == SHMEX_RES_OK) {
    result = shmex_open_and_mmap(&shmex);
  }
  ERL_NIF_TERM answer;
  if (result == SHMEX_RES_OK) {
    memcpy(shmex.mapped_memory, data.data, data.size);
    shmex.size = data.size;
    answer = ok(env, shmex_make_term(env, &shmex));
  } else {
    answer = shmex_make_error_term(env, result);
  }
  shmex_release(&shmex);
  return answer;
}

/* resize(shm, capacity): shmex_set_capacity. */
static ERL_NIF_TERM resize(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  Shmex shmex;
  ErlNifUInt64 capacity;
  if (!enif_get_uint64(env, argv[1], &capacity) || !shmex_get_from_term(env, argv[0], &shmex)) {
    return enif_make_badarg(env);
  }
  ShmexLibResult result = shmex_set_capacity(&shmex, (size_t)capacity);
  ERL_NIF_TERM answer = result == SHMEX_RES_OK ? ok(env, shmex_make_term(env, &shmex))
                                               : shmex_make_error_term(env, result);
  shmex_release(&shmex);
  return answer;
}

/* misuse(shm): the results of calls 0.5.1 let go wrong, as atoms:
 * {map again while mapped, resize while mapped, unmap twice then map}. */
static ERL_NIF_TERM misuse(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  Shmex shmex;
  if (!shmex_get_from_term(env, argv[0], &shmex)) {
    return enif_make_badarg(env);
  }
  ShmexLibResult first = shmex_open_and_mmap(&shmex);
  ShmexLibResult again = shmex_open_and_mmap(&shmex);
  ShmexLibResult resized = shmex_set_capacity(&shmex, 1);
  shmex_unmap(&shmex);
  shmex_unmap(&shmex);
  ShmexLibResult remapped = shmex_open_and_mmap(&shmex);
  shmex_release(&shmex);
  return enif_make_tuple4(env, result_atom(env, first), result_atom(env, again),
                          result_atom(env, resized), result_atom(env, remapped));
}

/* guard(shm): the struct with a guard of this library's own type. */
static ERL_NIF_TERM guard(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  Shmex shmex;
  if (!shmex_get_from_term(env, argv[0], &shmex)) {
    return enif_make_badarg(env);
  }
  shmex_add_guard(env, GUARD_TYPE, &shmex);
  ERL_NIF_TERM answer = shmex_make_term(env, &shmex);
  shmex_release(&shmex);
  return answer;
}

/* parse(term): whether shmex_get_from_term takes it. */
static ERL_NIF_TERM parse(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  Shmex shmex;
  if (!shmex_get_from_term(env, argv[0], &shmex)) {
    return enif_make_atom(env, "false");
  }
  shmex_release(&shmex);
  return enif_make_atom(env, "true");
}

/* unlink(shm): shmex_unlink. */
static ERL_NIF_TERM unlink_segment(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  Shmex shmex;
  if (!shmex_get_from_term(env, argv[0], &shmex)) {
    return enif_make_badarg(env);
  }
  ShmexLibResult result = shmex_unlink(&shmex);
  shmex_release(&shmex);
  return result_atom(env, result);
}

/* blank(capacity): shmex_init's struct, unallocated. */
static ERL_NIF_TERM blank(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  unsigned capacity;
  if (!enif_get_uint(env, argv[0], &capacity)) {
    return enif_make_badarg(env);
  }
  Shmex shmex;
  shmex_init(env, &shmex, capacity);
  ERL_NIF_TERM answer = shmex_make_term(env, &shmex);
  shmex_release(&shmex);
  return answer;
}

/* generate_name(): shmex_generate_shm_name. */
static ERL_NIF_TERM generate_name(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  (void)argv;
  char name[SHMEX_SHM_NAME_LEN];
  shmex_generate_shm_name(name, 0);
  ERL_NIF_TERM binary;
  memcpy(enif_make_new_binary(env, strlen(name), &binary), name, strlen(name));
  return binary;
}

/* error_term(code): shmex_make_error_term, errno set to ENOENT first. */
static ERL_NIF_TERM error_term(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  int code;
  if (!enif_get_int(env, argv[0], &code)) {
    return enif_make_badarg(env);
  }
  errno = ENOENT;
  return shmex_make_error_term(env, (ShmexLibResult)code);
}

/* result_name(code): shmex_lib_result_to_string. */
static ERL_NIF_TERM result_name(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  int code;
  if (!enif_get_int(env, argv[0], &code)) {
    return enif_make_badarg(env);
  }
  return enif_make_atom(env, shmex_lib_result_to_string((ShmexLibResult)code));
}

static ErlNifFunc functions[] = {
    {"allocate", 2, allocate, 0},       {"checksum", 1, checksum, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"write", 2, write_data, 0},             {"resize", 2, resize, 0},
    {"misuse", 1, misuse, 0},           {"guard", 1, guard, 0},
    {"parse", 1, parse, 0},             {"unlink", 1, unlink_segment, 0},
    {"blank", 1, blank, 0},             {"generate_name", 0, generate_name, 0},
    {"error_term", 1, error_term, 0},   {"result_name", 1, result_name, 0},
    {"allocate_named", 2, allocate_named, 0}, {"unguarded_sigbus", 0, unguarded_sigbus, 0},
};

/* The module it is loaded as: the suite builds it a second time as
 * ShmexCClient.Second (-DMODULE=...), two C libraries in one VM. MODULE is
 * expanded before ERL_NIF_INIT stringizes it. */
#ifndef MODULE
#define MODULE Elixir.ShmexCClient.Nif
#endif
#define INIT(module) ERL_NIF_INIT(module, functions, load, NULL, NULL, NULL)
INIT(MODULE)
