/*
 * The libmodbus reference loop for the polling benchmark (BENCHMARKS.md):
 * one thread and one TCP connection per server port, each reading the same
 * register blocks the agent reads (BLOCKS reads of BLOCK_REGS input registers
 * from address 0, unit 1) back to back for SECONDS. Prints the totals.
 *
 *   modbus_loop SECONDS BLOCK_REGS BLOCKS PORT [PORT ...]
 *
 * Built by scripts/setup-test-peers.sh against Debian's libmodbus-dev.
 */
#include <errno.h>
#include <modbus.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

struct job {
    int port;
    int seconds;
    int block_regs;
    int blocks;
    long requests;
    long registers;
    long errors;
};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *run(void *arg) {
    struct job *j = arg;
    uint16_t regs[125];
    modbus_t *ctx = modbus_new_tcp("127.0.0.1", j->port);
    if (ctx == NULL || modbus_connect(ctx) == -1) {
        fprintf(stderr, "port %d: connect: %s\n", j->port, modbus_strerror(errno));
        j->errors++;
        return NULL;
    }
    modbus_set_slave(ctx, 1);
    double end = now() + j->seconds;
    while (now() < end) {
        for (int b = 0; b < j->blocks; b++) {
            int n = modbus_read_input_registers(ctx, b * j->block_regs, j->block_regs, regs);
            if (n == j->block_regs) {
                j->requests++;
                j->registers += n;
            } else {
                j->errors++;
            }
        }
    }
    modbus_close(ctx);
    modbus_free(ctx);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s SECONDS BLOCK_REGS BLOCKS PORT [PORT ...]\n", argv[0]);
        return 2;
    }
    int seconds = atoi(argv[1]), block_regs = atoi(argv[2]), blocks = atoi(argv[3]);
    int n = argc - 4;
    if (block_regs < 1 || block_regs > 125 || blocks < 1 || seconds < 1) {
        fprintf(stderr, "bad arguments\n");
        return 2;
    }
    struct job *jobs = calloc(n, sizeof *jobs);
    pthread_t *threads = calloc(n, sizeof *threads);
    double start = now();
    for (int i = 0; i < n; i++) {
        jobs[i] = (struct job){.port = atoi(argv[4 + i]), .seconds = seconds,
                               .block_regs = block_regs, .blocks = blocks};
        pthread_create(&threads[i], NULL, run, &jobs[i]);
    }
    long req = 0, regs = 0, err = 0;
    for (int i = 0; i < n; i++) {
        pthread_join(threads[i], NULL);
        req += jobs[i].requests;
        regs += jobs[i].registers;
        err += jobs[i].errors;
    }
    double el = now() - start;
    printf("{\"seconds\": %.3f, \"requests\": %ld, \"registers\": %ld, \"errors\": %ld, "
           "\"requests_per_s\": %.0f, \"f32_tags_per_s\": %.0f}\n",
           el, req, regs, err, req / el, regs / 2.0 / el);
    return err > 0 ? 1 : 0;
}
