/* pwrite_load.c: the load of the requests bench (bench/requests.py), compiled there with gcc.
 *
 * PROCESSES processes of THREADS threads each; every thread opens a file of its own
 * (PREFIX-<process>-<thread>) and pwrite(2)s BLOCK bytes in turn over its first 256 blocks, as
 * fast as it can, from START_AT_NS (CLOCK_MONOTONIC; 0: now) until SECONDS later. One thread per
 * file: the kernel serialises writes to one FUSE file (the inode lock), so concurrent writers
 * need files of their own. Each thread counts its completed calls; prints
 * {"ops": N, "seconds": S, "pids": [...]} where S runs from the start to the last thread's end
 * (a call begun before the deadline is waited for and counted).
 *
 *   pwrite_load PREFIX PROCESSES THREADS SECONDS [START_AT_NS [BLOCK]]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SPAN 256
#define MAX_THREADS 1024

struct slot { /* one thread's results, in memory shared with the parent */
    unsigned long long ops;
    long long finished_ns;
    int error;
};

struct writer {
    char path[4096];
    long long start_ns, deadline_ns;
    size_t block;
    struct slot *slot;
};

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void sleep_until(long long ns)
{
    struct timespec ts = {ns / 1000000000LL, ns % 1000000000LL};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

static void *write_loop(void *arg)
{
    struct writer *w = arg;
    int fd = open(w->path, O_WRONLY | O_CREAT, 0644);
    char *buf = malloc(w->block);
    if (fd < 0 || !buf) {
        w->slot->error = errno ? errno : ENOMEM;
        return NULL;
    }
    memset(buf, 'x', w->block);
    sleep_until(w->start_ns);
    unsigned long long n = 0;
    while (now_ns() < w->deadline_ns) {
        if (pwrite(fd, buf, w->block, (off_t)(n % SPAN) * (off_t)w->block) < 0) {
            w->slot->error = errno;
            break;
        }
        n++;
    }
    w->slot->ops = n;
    w->slot->finished_ns = now_ns();
    close(fd);
    free(buf);
    return NULL;
}

static int run_process(const char *prefix, int p, int threads, long long start_ns,
                       long long deadline_ns, size_t block, struct slot *slots)
{
    struct writer *writers = calloc(threads, sizeof(*writers));
    pthread_t *ids = calloc(threads, sizeof(*ids));
    if (!writers || !ids)
        return 1;
    for (int t = 0; t < threads; t++) {
        struct writer *w = &writers[t];
        snprintf(w->path, sizeof(w->path), "%s-%d-%d", prefix, p, t);
        w->start_ns = start_ns;
        w->deadline_ns = deadline_ns;
        w->block = block;
        w->slot = &slots[t];
        if (pthread_create(&ids[t], NULL, write_loop, w))
            return 1;
    }
    for (int t = 0; t < threads; t++)
        pthread_join(ids[t], NULL);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: %s PREFIX PROCESSES THREADS SECONDS [START_AT_NS [BLOCK]]\n",
                argv[0]);
        return 2;
    }
    const char *prefix = argv[1];
    int processes = atoi(argv[2]), threads = atoi(argv[3]);
    double seconds = atof(argv[4]);
    long long start_ns = argc > 5 ? atoll(argv[5]) : 0;
    size_t block = argc > 6 ? (size_t)atol(argv[6]) : 4096;
    if (processes < 1 || threads < 1 || processes * threads > MAX_THREADS || seconds <= 0) {
        fprintf(stderr, "%s: bad arguments\n", argv[0]);
        return 2;
    }
    if (start_ns < now_ns())
        start_ns = now_ns();
    long long deadline_ns = start_ns + (long long)(seconds * 1e9);
    struct slot *slots = mmap(NULL, sizeof(struct slot) * processes * threads,
                              PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (slots == MAP_FAILED)
        return 1;
    memset(slots, 0, sizeof(struct slot) * processes * threads);
    pid_t *pids = calloc(processes, sizeof(*pids));
    for (int p = 0; p < processes; p++) {
        pids[p] = fork();
        if (pids[p] < 0)
            return 1;
        if (pids[p] == 0)
            _exit(run_process(prefix, p, threads, start_ns, deadline_ns, block,
                              &slots[p * threads]));
    }
    int failed = 0;
    for (int p = 0; p < processes; p++) {
        int status = 0;
        waitpid(pids[p], &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status))
            failed = 1;
    }
    unsigned long long ops = 0;
    long long last = start_ns;
    for (int i = 0; i < processes * threads; i++) {
        if (slots[i].error) {
            fprintf(stderr, "%s: thread %d: %s\n", argv[0], i, strerror(slots[i].error));
            failed = 1;
        }
        ops += slots[i].ops;
        if (slots[i].finished_ns > last)
            last = slots[i].finished_ns;
    }
    printf("{\"ops\": %llu, \"seconds\": %.6f, \"pids\": [", ops, (last - start_ns) / 1e9);
    for (int p = 0; p < processes; p++)
        printf("%s%d", p ? ", " : "", pids[p]);
    printf("]}\n");
    return failed;
}
