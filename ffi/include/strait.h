/* The C ABI of the Strait engine. Generated from ffi/src by cbindgen: do not edit. See docs/EMBEDDING.md. */

#ifndef STRAIT_H
#define STRAIT_H

#include <stddef.h>
#include <stdint.h>

/*
 Bytes of an interface name in [`StraitPortCounters`], NUL included
 (Linux's IFNAMSIZ).
 */
#define STRAIT_INTERFACE_NAME_LEN 16

/*
 What a call did. `STRAIT_OK` is 0; every other value is a failure whose
 message `strait_last_error` returns.
 */
typedef enum {
  /*
   Done.
   */
  STRAIT_OK = 0,
  /*
   A NULL pointer where one is not allowed, or a string that is not
   UTF-8.
   */
  STRAIT_ERROR_ARGUMENT = 1,
  /*
   The configuration, or the route, NAT rule or SA given, was refused
   (the message names the item, the reason and the line).
   */
  STRAIT_ERROR_CONFIG = 2,
  /*
   The engine could not start (an interface, AF_XDP, a thread).
   */
  STRAIT_ERROR_ENGINE = 3,
  /*
   Not possible in the engine's state: started twice, or a change to
   an engine that is not running.
   */
  STRAIT_ERROR_STATE = 4,
  /*
   The caller's array is too small; the count says how many are needed.
   */
  STRAIT_ERROR_BUFFER = 5,
  /*
   No such interface or drop reason.
   */
  STRAIT_ERROR_NOT_FOUND = 6,
  /*
   A bug in Strait: a panic was caught at the boundary.
   */
  STRAIT_ERROR_PANIC = 7,
} strait_status;

/*
 The kind of an event.
 */
typedef enum {
  /*
   An SA passed its soft lifetime: negotiate a replacement and rekey.
   */
  STRAIT_EVENT_SA_SOFT_EXPIRED = 0,
  /*
   An SA passed its hard lifetime: it refuses traffic now.
   */
  STRAIT_EVENT_SA_HARD_EXPIRED = 1,
  /*
   A kind this version of the header does not name (see `name`).
   */
  STRAIT_EVENT_OTHER = 255,
} strait_event_kind;

/*
 Whether an SA seals or opens.
 */
typedef enum {
  /*
   We open (decrypt) with it.
   */
  STRAIT_SA_INBOUND = 0,
  /*
   We seal (encrypt) with it.
   */
  STRAIT_SA_OUTBOUND = 1,
} strait_sa_direction;

/*
 The lifetime an SA event is about.
 */
typedef enum {
  /*
   Its age.
   */
  STRAIT_LIMIT_TIME = 0,
  /*
   Its inner bytes.
   */
  STRAIT_LIMIT_BYTES = 1,
  /*
   Its sequence numbers.
   */
  STRAIT_LIMIT_SEQUENCE_NUMBERS = 2,
} strait_sa_limit;

/*
 Which rekey step `strait_engine_rekey` takes, in the order a rekey
 (RFC 7296 §2.8) needs them: install the new inbound SA, switch outbound
 to the new one, retire the old inbound one.
 */
typedef enum {
  /*
   Accept a new inbound SA alongside the current ones.
   */
  STRAIT_REKEY_INSTALL_INBOUND = 0,
  /*
   Seal with a new outbound SA from now on.
   */
  STRAIT_REKEY_SWITCH_OUTBOUND = 1,
  /*
   Stop accepting the inbound SA with the SPI given.
   */
  STRAIT_REKEY_RETIRE_INBOUND = 2,
} strait_rekey_step;

/*
 An engine as C holds it (`strait_engine *`): an opaque handle.
 */
typedef struct strait_engine strait_engine;

/*
 One event, valid only for the duration of the callback.
 */
typedef struct {
  /*
   What happened.
   */
  strait_event_kind kind;
  /*
   Short name of the kind, e.g. `"sa-soft-expired"` (NUL-terminated).
   */
  const char *name;
  /*
   The tunnel (NUL-terminated).
   */
  const char *tunnel;
  /*
   The SA's SPI.
   */
  uint32_t spi;
  /*
   Whether we seal or open with the SA.
   */
  strait_sa_direction direction;
  /*
   The limit that passed.
   */
  strait_sa_limit limit;
} strait_event;

/*
 Receives events, on a thread of the engine (not the caller's), one at a
 time, in the order the engine noticed them. It must return without
 unwinding (no C++ exception may leave it).
 */
typedef void (*strait_event_callback)(const strait_event *event, void *user);

/*
 One interface's counters, summed over the workers.
 */
typedef struct {
  /*
   The interface, NUL-terminated.
   */
  char interface[STRAIT_INTERFACE_NAME_LEN];
  /*
   Frames received.
   */
  uint64_t rx_packets;
  /*
   Bytes received.
   */
  uint64_t rx_bytes;
  /*
   Frames transmitted.
   */
  uint64_t tx_packets;
  /*
   Bytes transmitted.
   */
  uint64_t tx_bytes;
  /*
   Frames routed to another port.
   */
  uint64_t forwarded;
  /*
   Frames handed to the host stack.
   */
  uint64_t punted;
  /*
   ICMP errors and echo replies generated.
   */
  uint64_t icmp_sent;
  /*
   ESP packets sealed into a tunnel leaving by this interface.
   */
  uint64_t esp_sealed;
  /*
   ESP packets opened after arriving on this interface.
   */
  uint64_t esp_opened;
  /*
   Frames dropped, all reasons (`strait_engine_drop_count` for one).
   */
  uint64_t dropped;
} strait_port_counters;

#ifdef __cplusplus
extern "C" {
#endif // __cplusplus

/*
 Parses and validates a configuration (TOML, the format of
 docs/CONFIG.md) without touching any interface, and returns an engine
 that is not running yet in `*out`. `path` names the configuration in
 error messages and is what relative paths in it (key files,
 `state_dir`) are resolved against; NULL means `"<embedded>"`. Free the
 engine with `strait_engine_free`.

 # Safety
 `toml` is a NUL-terminated string; `path` is NULL or one; `out` is
 valid for one pointer write.
 */
strait_status strait_engine_new(const char *toml, const char *path, strait_engine **out);

/*
 Stops the engine if it runs and frees it. NULL is allowed.

 # Safety
 `engine` is NULL or from `strait_engine_new`, not yet freed, and no
 other thread is using it; it must not be used afterwards.
 */
void strait_engine_free(strait_engine *engine);

/*
 Opens the interfaces and starts the workers.

 # Safety
 `engine` is from `strait_engine_new` and not yet freed.
 */
strait_status strait_engine_start(strait_engine *engine);

/*
 Stops the workers cleanly (rings drained, programs detached). The
 engine keeps the configuration in force, so a later
 `strait_engine_start` resumes with it.

 # Safety
 `engine` is from `strait_engine_new` and not yet freed.
 */
strait_status strait_engine_stop(strait_engine *engine);

/*
 Registers the function that receives the engine's events (NULL
 unregisters). It is called on a thread of the engine with `user`
 passed back; events with no callback registered are dropped. An event
 being delivered while the callback is replaced may still reach the old
 one; after `strait_engine_stop` returns, none does.

 # Safety
 `engine` is from `strait_engine_new` and not yet freed; `callback`,
 with `user`, may be called from another thread until it is replaced or
 the engine is stopped.
 */
strait_status strait_engine_set_event_callback(strait_engine *engine,
                                               strait_event_callback callback,
                                               void *user);

/*
 Replaces the running configuration with `toml` (validated whole,
 published to the workers at once; refused, it changes nothing).
 Writes the new table generation to `*generation` if not NULL.

 # Safety
 `engine` is from `strait_engine_new` and not yet freed; `toml` is a
 NUL-terminated string; `generation` is NULL or writable.
 */
strait_status strait_engine_apply(strait_engine *engine, const char *toml, uint64_t *generation);

/*
 Adds a route given as the fields of a `[[route]]` table in TOML, e.g.
 `prefix = "10.9.0.0/16"\nvia = ["10.2.0.2"]`.

 # Safety
 As `strait_engine_apply`.
 */
strait_status strait_engine_add_route(strait_engine *engine,
                                      const char *route_toml,
                                      uint64_t *generation);

/*
 Deletes the route for `prefix` (`"10.9.0.0/16"`).

 # Safety
 As `strait_engine_apply`.
 */
strait_status strait_engine_delete_route(strait_engine *engine,
                                         const char *prefix,
                                         uint64_t *generation);

/*
 Adds a NAT rule given as the fields of a `[[nat]]` table in TOML.

 # Safety
 As `strait_engine_apply`.
 */
strait_status strait_engine_add_nat_rule(strait_engine *engine,
                                         const char *rule_toml,
                                         uint64_t *generation);

/*
 Deletes the NAT rule `name` and its sessions.

 # Safety
 As `strait_engine_apply`.
 */
strait_status strait_engine_delete_nat_rule(strait_engine *engine,
                                            const char *name,
                                            uint64_t *generation);

/*
 One rekey step on `tunnel`; `step` is a `strait_rekey_step` value
 (any other is refused). Install-inbound and switch-outbound take
 the new SA as the fields of an SA table in TOML (`spi = 4098\ncipher =
 "aes128-gcm"\nkey = "..."`, the `spi` argument unused); retire-inbound takes
 `spi` (`sa_toml` may be NULL).

 # Safety
 As `strait_engine_apply`; `sa_toml` is NULL or a NUL-terminated
 string.
 */
strait_status strait_engine_rekey(strait_engine *engine,
                                  const char *tunnel,
                                  uint32_t step,
                                  const char *sa_toml,
                                  uint32_t spi,
                                  uint64_t *generation);

/*
 The generation of the tables the workers run (each change adds one).

 # Safety
 `engine` is from `strait_engine_new` and not yet freed; `generation`
 is writable.
 */
strait_status strait_engine_generation(const strait_engine *engine, uint64_t *generation);

/*
 Copies each interface's counters into `out` (room for `capacity`) and
 the number of interfaces into `*count`. With too little room it copies
 nothing and returns `STRAIT_ERROR_BUFFER`, `*count` saying how many are
 needed; `out` may be NULL when `capacity` is 0.

 # Safety
 `engine` is from `strait_engine_new` and not yet freed; `out` is valid
 for `capacity` writes; `count` is writable.
 */
strait_status strait_engine_counters(const strait_engine *engine,
                                     strait_port_counters *out,
                                     size_t capacity,
                                     size_t *count);

/*
 The frames `interface` dropped for `reason` (a name from `straitctl
 show drops`, e.g. `"no_route"`), summed over the workers.

 # Safety
 `engine` is from `strait_engine_new` and not yet freed; the strings are
 NUL-terminated; `value` is writable.
 */
strait_status strait_engine_drop_count(const strait_engine *engine,
                                       const char *interface,
                                       const char *reason,
                                       uint64_t *value);

/*
 Why the last failed `strait_*` call on this thread failed ("" after a
 success). Owned by Strait: valid until the next `strait_*` call on
 this thread; never NULL.
 */
const char *strait_last_error(void);

#ifdef __cplusplus
}  // extern "C"
#endif  // __cplusplus

#endif  /* STRAIT_H */
