/*
 * Embedding Strait from C: every function of the C ABI (ffi/include/strait.h).
 *
 *   cc -o embed examples/c/embed.c -Iffi/include -Ltarget/release -lstrait
 *   ./embed strait.toml          (as root, in the namespace holding the interfaces)
 *
 * It creates an engine from the file's text, registers an event callback,
 * starts it, and then, one step per line read on standard input (so a
 * caller can send traffic between steps), prints counters, adds and
 * deletes a route, adds and deletes a NAT rule, rekeys the tunnel "hub"
 * (install inbound, switch outbound, retire the old inbound SA), applies a
 * refused and then a good configuration, waits for an SA lifetime event,
 * stops and frees the engine. Each line it prints starts with the step's
 * name; any failure prints the status and message and exits 1.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "strait.h"

static atomic_int soft_expired;

static void on_event(const strait_event *ev, void *user) {
    (void)user;
    /* Called on the engine's event thread: print and count only. */
    printf("event %s tunnel=%s spi=%u direction=%s\n", ev->name, ev->tunnel, ev->spi,
           ev->direction == STRAIT_SA_OUTBOUND ? "outbound" : "inbound");
    fflush(stdout);
    if (ev->kind == STRAIT_EVENT_SA_SOFT_EXPIRED)
        atomic_fetch_add(&soft_expired, 1);
}

static void check(strait_status st, const char *what) {
    if (st != STRAIT_OK) {
        printf("failed %s: status %d: %s\n", what, (int)st, strait_last_error());
        exit(1);
    }
}

/* Waits for the caller's go-ahead: one line on standard input. */
static void next_step(void) {
    char line[64];
    fflush(stdout);
    if (!fgets(line, sizeof line, stdin)) {
        printf("failed: standard input closed\n");
        exit(1);
    }
}

static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        exit(1);
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    char *text = malloc((size_t)n + 1);
    if (!text || fread(text, 1, (size_t)n, f) != (size_t)n) {
        perror(path);
        exit(1);
    }
    text[n] = '\0';
    fclose(f);
    return text;
}

static void print_counters(strait_engine *e) {
    strait_port_counters c[8];
    size_t n = 0;
    /* Too small an array is refused and says how many are needed. */
    if (strait_engine_counters(e, c, 0, &n) != STRAIT_ERROR_BUFFER) {
        printf("failed counters: a zero-sized array was accepted\n");
        exit(1);
    }
    printf("counters needs %zu\n", n);
    check(strait_engine_counters(e, c, 8, &n), "counters");
    for (size_t i = 0; i < n; i++)
        printf("counters %s rx=%llu tx=%llu forwarded=%llu dropped=%llu\n", c[i].interface,
               (unsigned long long)c[i].rx_packets, (unsigned long long)c[i].tx_packets,
               (unsigned long long)c[i].forwarded, (unsigned long long)c[i].dropped);
    uint64_t no_route = 0;
    check(strait_engine_drop_count(e, "left", "no_route", &no_route), "drop count");
    printf("counters left no_route=%llu\n", (unsigned long long)no_route);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s CONFIG.toml\n", argv[0]);
        return 2;
    }
    char *toml = read_file(argv[1]);
    strait_engine *e = NULL;
    uint64_t gen = 0;

    check(strait_engine_new(toml, argv[1], &e), "new");
    check(strait_engine_set_event_callback(e, on_event, NULL), "set callback");
    check(strait_engine_start(e), "start");
    check(strait_engine_generation(e, &gen), "generation");
    printf("started generation=%llu\n", (unsigned long long)gen);
    next_step();

    print_counters(e);
    next_step();

    check(strait_engine_add_route(e, "prefix = \"10.9.0.0/16\"\nvia = [\"10.2.0.2\"]", &gen),
          "add route");
    printf("route added generation=%llu\n", (unsigned long long)gen);
    next_step();

    check(strait_engine_delete_route(e, "10.9.0.0/16", &gen), "delete route");
    printf("route deleted generation=%llu\n", (unsigned long long)gen);
    strait_status st = strait_engine_delete_route(e, "10.9.0.0/16", NULL);
    printf("route delete again status=%d: %s\n", (int)st, strait_last_error());
    next_step();

    check(strait_engine_add_nat_rule(e,
                                     "name = \"egress\"\nkind = \"snat\"\n"
                                     "source = \"10.1.0.0/24\"\nout_interface = \"right\"\n"
                                     "addresses = [\"10.2.0.1\"]",
                                     &gen),
          "add nat rule");
    printf("nat added generation=%llu\n", (unsigned long long)gen);
    next_step();

    check(strait_engine_delete_nat_rule(e, "egress", &gen), "delete nat rule");
    printf("nat deleted generation=%llu\n", (unsigned long long)gen);
    next_step();

    /* A rekey of the tunnel "hub": the new SA's soft lifetime is one second,
     * so the engine reports it soon after. */
    check(strait_engine_rekey(e, "hub", STRAIT_REKEY_INSTALL_INBOUND,
                              "spi = 4098\ncipher = \"aes128-gcm\"\n"
                              "key = \"b0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0c1c2c3\"",
                              0, &gen),
          "rekey install inbound");
    check(strait_engine_rekey(e, "hub", STRAIT_REKEY_SWITCH_OUTBOUND,
                              "spi = 4099\ncipher = \"aes128-gcm\"\n"
                              "key = \"c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3\"\n"
                              "soft_seconds = 1",
                              0, &gen),
          "rekey switch outbound");
    check(strait_engine_rekey(e, "hub", STRAIT_REKEY_RETIRE_INBOUND, NULL, 4097, &gen),
          "rekey retire inbound");
    printf("rekeyed generation=%llu\n", (unsigned long long)gen);
    st = strait_engine_rekey(e, "hub", 7, NULL, 0, NULL);
    printf("rekey bad step status=%d: %s\n", (int)st, strait_last_error());

    /* The new outbound SA's soft lifetime passes; the engine notices it at
     * its next status publication (every 500 ms). Bounded wait. */
    for (int i = 0; i < 100 && atomic_load(&soft_expired) == 0; i++) {
        struct timespec t = {0, 50 * 1000 * 1000};
        nanosleep(&t, NULL);
    }
    printf("soft expired events=%d\n", atomic_load(&soft_expired));

    /* The same configuration with a bad route appended: refused whole,
     * naming the route's line; the running tables stay as they were. */
    static const char bad_route[] = "\n[[route]]\nprefix = \"10.0.0.0/33\"\nkind = \"blackhole\"\n";
    char *bad = malloc(strlen(toml) + sizeof bad_route);
    if (!bad) {
        printf("failed: out of memory\n");
        return 1;
    }
    strcpy(bad, toml);
    strcat(bad, bad_route);
    st = strait_engine_apply(e, bad, NULL);
    free(bad);
    printf("apply refused status=%d: %s\n", (int)st, strait_last_error());
    check(strait_engine_apply(e, toml, &gen), "apply");
    printf("applied generation=%llu\n", (unsigned long long)gen);
    next_step();


    check(strait_engine_stop(e), "stop");
    st = strait_engine_stop(e);
    printf("stopped; stop again status=%d: %s\n", (int)st, strait_last_error());
    strait_engine_free(e);
    free(toml);
    printf("freed\n");
    return 0;
}
