/*
 * The least a NIF does for a 64-byte read or write of a %Shmex{} (the
 * benchmark's "least a NIF does" line, bench/shmex_bench.exs builds and
 * loads it): take the struct's fields from the map (checking __struct__,
 * reading name, guard, size and capacity), one fstat of the segment (its
 * result unused), a copy out of or into a mapping, and the reply (for a
 * write, the struct with its size updated). The descriptor and mapping come
 * as a second argument, opened once: no lookup by name, no turns, no claims
 * checked against the file, no guard looked at. What is above it in Shmex's
 * own figures is what those cost, and Shmex.Native's Elixir functions
 * around the NIF.
 *
 *   open(name)          a handle: the segment opened and mapped (its first
 *                       4 KiB), kept by a resource
 *   read(shm, handle)   {:ok, the first shm.size bytes}
 *   write(shm, handle, data)
 *                       {:ok, shm}
 */
#define _GNU_SOURCE
#include <erl_nif.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAPPED 4096

typedef struct {
  int fd;
  unsigned char *memory;
} Handle;

static ErlNifResourceType *HANDLE;
static ERL_NIF_TERM STRUCT, SHMEX, NAME, GUARD, SIZE, CAPACITY, OK;
static int SHM_DIR = -1;

static void handle_destructor(ErlNifEnv *env, void *object) {
  (void)env;
  Handle *handle = object;
  if (handle->memory != MAP_FAILED) munmap(handle->memory, MAPPED);
  if (handle->fd >= 0) close(handle->fd);
}

static int load(ErlNifEnv *env, void **priv, ERL_NIF_TERM info) {
  (void)priv;
  (void)info;
  HANDLE = enif_open_resource_type(env, NULL, "least_handle", handle_destructor,
                                   ERL_NIF_RT_CREATE, NULL);
  STRUCT = enif_make_atom(env, "__struct__");
  SHMEX = enif_make_atom(env, "Elixir.Shmex");
  NAME = enif_make_atom(env, "name");
  GUARD = enif_make_atom(env, "guard");
  SIZE = enif_make_atom(env, "size");
  CAPACITY = enif_make_atom(env, "capacity");
  OK = enif_make_atom(env, "ok");
  SHM_DIR = open("/dev/shm", O_DIRECTORY | O_PATH | O_CLOEXEC);
  return HANDLE == NULL || SHM_DIR < 0;
}

static ERL_NIF_TERM open_segment(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  ErlNifBinary name;
  char path[256];
  /* "/name": one slash, then a name of the directory. */
  if (!enif_inspect_binary(env, argv[0], &name) || name.size < 2 || name.size > 255 ||
      name.data[0] != '/' || memchr(name.data + 1, '/', name.size - 1) ||
      memchr(name.data, 0, name.size)) {
    return enif_make_badarg(env);
  }
  memcpy(path, name.data + 1, name.size - 1);
  path[name.size - 1] = 0;
  Handle *handle = enif_alloc_resource(HANDLE, sizeof *handle);
  handle->memory = MAP_FAILED;
  handle->fd = openat(SHM_DIR, path, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
  if (handle->fd >= 0) {
    handle->memory = mmap(NULL, MAPPED, PROT_READ | PROT_WRITE, MAP_SHARED, handle->fd, 0);
  }
  ERL_NIF_TERM term = enif_make_resource(env, handle);
  enif_release_resource(handle);
  return handle->memory == MAP_FAILED ? enif_make_badarg(env) : term;
}

/* The struct's size, its handle and the segment's status: 0 if malformed. */
static int take(ErlNifEnv *env, ERL_NIF_TERM shm, ERL_NIF_TERM handle_term, Handle **handle,
                ErlNifUInt64 *size) {
  ERL_NIF_TERM module, name, guard, size_term, capacity_term;
  ErlNifBinary name_bytes;
  ErlNifUInt64 capacity;
  struct stat status;
  return enif_get_map_value(env, shm, STRUCT, &module) && enif_is_identical(module, SHMEX) &&
         enif_get_map_value(env, shm, NAME, &name) &&
         enif_get_map_value(env, shm, GUARD, &guard) &&
         enif_get_map_value(env, shm, SIZE, &size_term) &&
         enif_get_map_value(env, shm, CAPACITY, &capacity_term) &&
         enif_inspect_binary(env, name, &name_bytes) && enif_get_uint64(env, size_term, size) &&
         enif_get_uint64(env, capacity_term, &capacity) && *size <= MAPPED &&
         enif_get_resource(env, handle_term, HANDLE, (void **)handle) &&
         fstat((*handle)->fd, &status) == 0;
}

static ERL_NIF_TERM read_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  Handle *handle;
  ErlNifUInt64 size;
  if (!take(env, argv[0], argv[1], &handle, &size)) return enif_make_badarg(env);
  ERL_NIF_TERM data;
  memcpy(enif_make_new_binary(env, size, &data), handle->memory, size);
  return enif_make_tuple2(env, OK, data);
}

static ERL_NIF_TERM write_nif(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  Handle *handle;
  ErlNifUInt64 size;
  ErlNifBinary data;
  if (!take(env, argv[0], argv[1], &handle, &size) || !enif_inspect_binary(env, argv[2], &data) ||
      data.size > MAPPED) {
    return enif_make_badarg(env);
  }
  memcpy(handle->memory, data.data, data.size);
  ERL_NIF_TERM written;
  if (!enif_make_map_update(env, argv[0], SIZE, enif_make_uint64(env, data.size), &written)) {
    return enif_make_badarg(env);
  }
  return enif_make_tuple2(env, OK, written);
}

static ErlNifFunc functions[] = {
    {"open", 1, open_segment, 0},
    {"read", 2, read_nif, 0},
    {"write", 3, write_nif, 0},
};

ERL_NIF_INIT(Elixir.Shmex.Bench.Least, functions, load, NULL, NULL, NULL)
