/*
 * What a unifex native does with shm payloads (unifex's payload.c, on
 * Shmex's C API), in a loop, and the same system calls by name without any
 * library: the benchmark's C path (bench/c_path_bench.exs builds it twice,
 * as two NIF libraries of one VM, MODULE naming each).
 *
 *   touch(shm, n)        unifex_payload_from_term + reading a byte +
 *                        unifex_payload_release: shmex_get_from_term,
 *                        shmex_open_and_mmap, shmex_release; ns each
 *   allocate(size, n)    unifex_payload_alloc and filling it: shmex_init,
 *                        shmex_allocate, shmex_open_and_mmap, memset,
 *                        shmex_make_term, shmex_release; the n payloads
 *   floor_touch(name, n) openat + fstat + mmap + close + a byte + munmap
 *   floor_allocate(size, n)
 *                        openat(O_CREAT|O_EXCL) + ftruncate + mmap +
 *                        memset + munmap + close + unlink
 *   floor_allocate_terms(size, n)
 *                        the same system calls, each payload handed to
 *                        Elixir as a %Shmex{} whose guard is a resource of
 *                        this library: its destructor unmaps, closes and
 *                        unlinks when the VM collects it. The least any NIF
 *                        library does that gives C-made payloads to Elixir.
 *                        Returns the n payloads
 */
#define _GNU_SOURCE
#include <erl_nif.h>
#include <fcntl.h>
#include <shmex/shmex.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static ErlNifResourceType *GUARD;
static ErlNifResourceType *FLOOR_PAYLOAD;
static int SHM_DIR = -1;
static ERL_NIF_TERM STRUCT_KEYS[5], SHMEX_MODULE;

#define STRING(x) #x
#define NAMED(x) STRING(x)

/* A payload of floor_allocate_terms: what its destructor lets go of. */
typedef struct {
  void *memory;
  size_t size;
  int fd;
  char name[64];
} FloorPayload;

static void floor_payload_destructor(ErlNifEnv *env, void *object) {
  (void)env;
  FloorPayload *payload = object;
  if (payload->memory != MAP_FAILED) munmap(payload->memory, payload->size);
  if (payload->fd >= 0) {
    /* Created by this payload (O_EXCL): its name is this payload's. */
    close(payload->fd);
    unlinkat(SHM_DIR, payload->name, 0);
  }
}

static int load(ErlNifEnv *env, void **priv, ERL_NIF_TERM info) {
  (void)priv;
  (void)info;
  GUARD = enif_open_resource_type(env, NULL, "payload_guard", shmex_guard_destructor,
                                  ERL_NIF_RT_CREATE, NULL);
  FLOOR_PAYLOAD = enif_open_resource_type(env, NULL, "floor_payload", floor_payload_destructor,
                                          ERL_NIF_RT_CREATE, NULL);
  SHM_DIR = open("/dev/shm", O_DIRECTORY | O_PATH | O_CLOEXEC);
  const char *keys[] = {"__struct__", "name", "guard", "size", "capacity"};
  for (int i = 0; i < 5; i++) STRUCT_KEYS[i] = enif_make_atom(env, keys[i]);
  SHMEX_MODULE = enif_make_atom(env, "Elixir.Shmex");
  return GUARD == NULL || FLOOR_PAYLOAD == NULL || SHM_DIR < 0;
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e9 + t.tv_nsec;
}

static volatile unsigned char sink;

static ERL_NIF_TERM touch(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  unsigned n;
  if (!enif_get_uint(env, argv[1], &n) || n == 0) return enif_make_badarg(env);
  double start = now();
  for (unsigned i = 0; i < n; i++) {
    Shmex payload;
    if (!shmex_get_from_term(env, argv[0], &payload)) return enif_make_badarg(env);
    ShmexLibResult result = shmex_open_and_mmap(&payload);
    if (result != SHMEX_RES_OK) {
      shmex_release(&payload);
      return shmex_make_error_term(env, result);
    }
    sink += ((unsigned char *)payload.mapped_memory)[0];
    shmex_release(&payload);
  }
  return enif_make_double(env, (now() - start) / n);
}

static ERL_NIF_TERM allocate(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  unsigned size, n;
  if (!enif_get_uint(env, argv[0], &size) || !enif_get_uint(env, argv[1], &n)) {
    return enif_make_badarg(env);
  }
  ERL_NIF_TERM list = enif_make_list(env, 0);
  for (unsigned i = 0; i < n; i++) {
    Shmex payload;
    shmex_init(env, &payload, size);
    ShmexLibResult result = shmex_allocate(env, GUARD, &payload);
    if (result == SHMEX_RES_OK) result = shmex_open_and_mmap(&payload);
    if (result != SHMEX_RES_OK) {
      shmex_release(&payload);
      return shmex_make_error_term(env, result);
    }
    memset(payload.mapped_memory, 1, size);
    payload.size = size;
    list = enif_make_list_cell(env, shmex_make_term(env, &payload), list);
    shmex_release(&payload);
  }
  return list;
}

static ERL_NIF_TERM floor_touch(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  ErlNifBinary name;
  unsigned n;
  char path[300];
  if (!enif_inspect_binary(env, argv[0], &name) || name.size < 2 || name.size > 255 ||
      name.data[0] != '/' || memchr(name.data + 1, '/', name.size - 1) ||
      memchr(name.data, 0, name.size) || !enif_get_uint(env, argv[1], &n) || n == 0) {
    return enif_make_badarg(env);
  }
  snprintf(path, sizeof path, "%.*s", (int)name.size - 1, (const char *)name.data + 1);
  int dir = open("/dev/shm", O_DIRECTORY | O_PATH | O_CLOEXEC);
  double start = now();
  for (unsigned i = 0; i < n; i++) {
    int fd = openat(dir, path, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || st.st_size == 0) return enif_make_badarg(env);
    void *memory = mmap(NULL, st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    sink += ((unsigned char *)memory)[0];
    munmap(memory, st.st_size);
  }
  double ns = (now() - start) / n;
  close(dir);
  return enif_make_double(env, ns);
}

static ERL_NIF_TERM floor_allocate(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  unsigned size, n;
  if (!enif_get_uint(env, argv[0], &size) || !enif_get_uint(env, argv[1], &n) || n == 0) {
    return enif_make_badarg(env);
  }
  int dir = open("/dev/shm", O_DIRECTORY | O_PATH | O_CLOEXEC);
  char name[64];
  double start = now();
  for (unsigned i = 0; i < n; i++) {
    snprintf(name, sizeof name, "shmex-floor-terms-%s-%d-%u", NAMED(MODULE), getpid(), i);
    int fd = openat(dir, name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0 || ftruncate(fd, size) != 0) return enif_make_badarg(env);
    void *memory = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    memset(memory, 1, size);
    munmap(memory, size);
    close(fd);
    unlinkat(dir, name, 0);
  }
  double ns = (now() - start) / n;
  close(dir);
  return enif_make_double(env, ns);
}

static ERL_NIF_TERM floor_allocate_terms(ErlNifEnv *env, int argc, const ERL_NIF_TERM argv[]) {
  (void)argc;
  unsigned size, n;
  if (!enif_get_uint(env, argv[0], &size) || !enif_get_uint(env, argv[1], &n)) {
    return enif_make_badarg(env);
  }
  static unsigned counter;
  ERL_NIF_TERM list = enif_make_list(env, 0);
  for (unsigned i = 0; i < n; i++) {
    FloorPayload *payload = enif_alloc_resource(FLOOR_PAYLOAD, sizeof *payload);
    int length = snprintf(payload->name, sizeof payload->name, "shmex-floor-terms-%s-%d-%u", NAMED(MODULE), getpid(),
                          __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED));
    payload->size = size;
    payload->memory = MAP_FAILED;
    payload->fd = openat(SHM_DIR, payload->name,
                         O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (payload->fd < 0 || ftruncate(payload->fd, size) != 0) {
      enif_release_resource(payload);
      return enif_make_badarg(env);
    }
    payload->memory = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, payload->fd, 0);
    if (payload->memory == MAP_FAILED) {
      enif_release_resource(payload);
      return enif_make_badarg(env);
    }
    memset(payload->memory, 1, size);
    ERL_NIF_TERM name;
    unsigned char *bytes = enif_make_new_binary(env, length + 1, &name);
    bytes[0] = '/';
    memcpy(bytes + 1, payload->name, length);
    ERL_NIF_TERM values[] = {SHMEX_MODULE, name,
                             enif_make_resource(env, payload), enif_make_uint(env, size),
                             enif_make_uint(env, size)};
    enif_release_resource(payload);
    ERL_NIF_TERM shm;
    enif_make_map_from_arrays(env, STRUCT_KEYS, values, 5, &shm);
    list = enif_make_list_cell(env, shm, list);
  }
  return list;
}

static ErlNifFunc functions[] = {
    {"touch", 2, touch, 0},
    {"allocate", 2, allocate, 0},
    {"floor_touch", 2, floor_touch, 0},
    {"floor_allocate", 2, floor_allocate, 0},
    {"floor_allocate_terms", 2, floor_allocate_terms, 0},
};

/* MODULE is expanded before ERL_NIF_INIT stringizes it. */
#define INIT(module) ERL_NIF_INIT(module, functions, load, NULL, NULL, NULL)
INIT(MODULE)
