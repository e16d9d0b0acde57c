/* A workload with exactly known kernel activity, for the counter tests.
 * Built static so the dynamic loader opens nothing behind our back.
 *   workload exec N        fork + execve(self, "noop") N times
 *   workload noop          exit 0
 *   workload open N PATH [US]  open(PATH, O_RDONLY) + close, N times, US microseconds apart
 *   workload open-rate N PATH RATE  the same at RATE opens per second (paced, not faster)
 *   workload read N PATH     open PATH once, then pread(2) one byte N times
 *   workload connect N PORT  N TCP connects to 127.0.0.1:PORT, each closed at once
 *   workload serve PORT      accept and close TCP connections on 127.0.0.1:PORT (0: any
 *                            free port) until killed; prints the port once listening
 *   workload hold N PATH     N live processes (this one and N-1 forked children), each
 *                            opens PATH once; prints "held" once all have, then waits to be
 *                            killed (the children die with it)
 * Ways around a policy (tests/integration/evasion.rs); each exits 10 when the
 * protected content reached user space, 0 when the trick was refused, 3+ on a setup error:
 *   workload uring-read PATH     open PATH with io_uring's IORING_OP_OPENAT, then read(2) it
 *   workload handle-read PATH    name_to_handle_at + open_by_handle_at(PATH), then read(2) it
 *   workload read-fd FD [HOW]    read an inherited descriptor with HOW: read (default),
 *                                pread, readv, sendfile (to /dev/null), mmap, uring
 *   workload create PATH         creat(PATH): proof that this binary ran
 *   workload fexec BIN MARKER    fexecve(open(BIN)) as "BIN create MARKER"
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <errno.h>
#include <linux/io_uring.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/sendfile.h>
#include <sys/uio.h>
#include <sys/syscall.h>

/* One request through a fresh ring, without liburing: IORING_OP_OPENAT of
 * addr (a path), or IORING_OP_READ of len bytes from fd into addr. The result
 * the completion carries (a descriptor or a byte count, or -errno; -1000 -
 * errno on setup failure). */
static int uring_one(unsigned char opcode, int fd, void *addr, unsigned len) {
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    int ring = (int)syscall(__NR_io_uring_setup, 4, &p);
    if (ring < 0) return -1000 - errno;
    size_t sq_sz = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    size_t cq_sz = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    int single = (p.features & IORING_FEAT_SINGLE_MMAP) != 0;
    if (single && cq_sz > sq_sz) sq_sz = cq_sz;
    char *sq = mmap(NULL, sq_sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ring, IORING_OFF_SQ_RING);
    char *cq = single ? sq
                      : mmap(NULL, cq_sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ring, IORING_OFF_CQ_RING);
    struct io_uring_sqe *sqes = mmap(NULL, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE,
                                     MAP_SHARED | MAP_POPULATE, ring, IORING_OFF_SQES);
    if (sq == MAP_FAILED || cq == MAP_FAILED || sqes == MAP_FAILED) return -1000 - errno;
    unsigned *sq_tail = (unsigned *)(sq + p.sq_off.tail), *sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
    unsigned *sq_array = (unsigned *)(sq + p.sq_off.array);
    unsigned *cq_head = (unsigned *)(cq + p.cq_off.head), *cq_tail = (unsigned *)(cq + p.cq_off.tail);
    unsigned *cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
    struct io_uring_cqe *cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
    unsigned tail = *sq_tail, idx = tail & *sq_mask;
    struct io_uring_sqe *sqe = &sqes[idx];
    memset(sqe, 0, sizeof *sqe);
    sqe->opcode = opcode;
    sqe->fd = fd;
    sqe->addr = (unsigned long)addr;
    sqe->len = len;
    if (opcode == IORING_OP_OPENAT) sqe->open_flags = O_RDONLY;
    sq_array[idx] = idx;
    __atomic_store_n(sq_tail, tail + 1, __ATOMIC_RELEASE);
    if (syscall(__NR_io_uring_enter, ring, 1, 1, IORING_ENTER_GETEVENTS, NULL, 0) < 0) return -1000 - errno;
    unsigned head = __atomic_load_n(cq_head, __ATOMIC_ACQUIRE);
    if (head == __atomic_load_n(cq_tail, __ATOMIC_ACQUIRE)) return -1000;
    return cqes[head & *cq_mask].res;
}

/* 10 when a byte of fd reached user space. */
static int read_one(int fd) {
    char c;
    return read(fd, &c, 1) == 1 ? 10 : 0;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    if (strcmp(argv[1], "noop") == 0) return 0;
    /* A root process steps down to nobody and back: the effective
       capabilities go with the effective uid and come back with it. */
    if (strcmp(argv[1], "regain-root") == 0) {
        if (setresuid(-1, 65534, -1) != 0) return 3;
        if (setresuid(-1, 0, -1) != 0) return 4;
        return 0;
    }
    /* Gives up root for good, then tries to take it back: setuid(0) fails. */
    if (strcmp(argv[1], "setuid-denied") == 0) {
        if (setresuid(65534, 65534, 65534) != 0) return 3;
        return setuid(0) == 0 ? 4 : 0;
    }
    if (argc < 3) return 2;
    if (strcmp(argv[1], "uring-read") == 0) {
        int fd = uring_one(IORING_OP_OPENAT, AT_FDCWD, argv[2], 0);
        if (fd <= -1000) {
            fprintf(stderr, "io_uring: %s\n", strerror(-(fd + 1000)));
            return 3;
        }
        return fd < 0 ? 0 : read_one(fd);
    }
    if (strcmp(argv[1], "handle-read") == 0) {
        struct file_handle *fh = malloc(sizeof *fh + MAX_HANDLE_SZ);
        int mount_id;
        fh->handle_bytes = MAX_HANDLE_SZ;
        if (name_to_handle_at(AT_FDCWD, argv[2], fh, &mount_id, 0) != 0) return 3;
        int mfd = open("/", O_RDONLY | O_DIRECTORY);
        if (mfd < 0) return 4;
        int fd = open_by_handle_at(mfd, fh, O_RDONLY);
        return fd < 0 ? 0 : read_one(fd);
    }
    if (strcmp(argv[1], "read-fd") == 0) {
        int fd = atoi(argv[2]);
        const char *how = argc >= 4 ? argv[3] : "read";
        char c;
        if (strcmp(how, "read") == 0) return read_one(fd);
        if (strcmp(how, "pread") == 0) return pread(fd, &c, 1, 0) == 1 ? 10 : 0;
        if (strcmp(how, "readv") == 0) {
            struct iovec v = {&c, 1};
            return readv(fd, &v, 1) == 1 ? 10 : 0;
        }
        if (strcmp(how, "sendfile") == 0) {
            int out = open("/dev/null", O_WRONLY);
            return out >= 0 && sendfile(out, fd, NULL, 1) == 1 ? 10 : 0;
        }
        if (strcmp(how, "uring") == 0) {
            int r = uring_one(IORING_OP_READ, fd, &c, 1);
            if (r <= -1000) {
                fprintf(stderr, "io_uring: %s\n", strerror(-(r + 1000)));
                return 3;
            }
            return r == 1 ? 10 : 0;
        }
        if (strcmp(how, "mmap") == 0) {
            char *m = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, fd, 0);
            return m != MAP_FAILED && m[0] != 0 ? 10 : 0;
        }
        return 2;
    }
    if (strcmp(argv[1], "create") == 0) {
        int fd = creat(argv[2], 0644);
        return fd < 0 ? 3 : 0;
    }
    if (strcmp(argv[1], "fexec") == 0 && argc >= 4) {
        int fd = open(argv[2], O_RDONLY | O_CLOEXEC);
        if (fd < 0) return 3;
        char *args[] = {argv[2], "create", argv[3], NULL};
        char *env[] = {NULL};
        fexecve(fd, args, env);
        return 4;
    }
    if (strcmp(argv[1], "serve") == 0) {
        struct sockaddr_in a = {0};
        socklen_t len = sizeof a;
        a.sin_family = AF_INET;
        a.sin_port = htons((unsigned short)atoi(argv[2]));
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        int l = socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) != 0 || listen(l, 4096) != 0) return 1;
        if (getsockname(l, (struct sockaddr *)&a, &len) != 0) return 1;
        printf("%d\n", ntohs(a.sin_port));
        fflush(stdout);
        for (;;) {
            int c = accept(l, NULL, NULL);
            if (c >= 0) close(c);
        }
    }
    long n = strtol(argv[2], NULL, 10);
    if (strcmp(argv[1], "exec") == 0) {
        for (long i = 0; i < n; i++) {
            pid_t pid = fork();
            if (pid == 0) {
                char *args[] = {argv[0], "noop", NULL};
                execv("/proc/self/exe", args);
                _exit(127);
            }
            int status;
            if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) return 1;
        }
        return 0;
    }
    if (strcmp(argv[1], "open") == 0 && argc >= 4) {
        long pause_us = argc >= 5 ? strtol(argv[4], NULL, 10) : 0;
        for (long i = 0; i < n; i++) {
            int fd = open(argv[3], O_RDONLY);
            if (fd < 0) return 1;
            close(fd);
            if (pause_us > 0) usleep((useconds_t)pause_us);
        }
        return 0;
    }
    if (strcmp(argv[1], "hold") == 0 && argc >= 4) {
        int ready[2];
        if (pipe(ready) < 0) return 3;
        for (long i = 1; i < n; i++) {
            pid_t pid = fork();
            if (pid < 0) return 3;
            if (pid == 0) {
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                int fd = open(argv[3], O_RDONLY);
                if (fd >= 0) close(fd);
                if (write(ready[1], "x", 1) != 1) _exit(3);
                for (;;) pause();
            }
        }
        int fd = open(argv[3], O_RDONLY);
        if (fd >= 0) close(fd);
        char c;
        for (long i = 1; i < n; i++)
            if (read(ready[0], &c, 1) != 1) return 3;
        printf("held\n");
        fflush(stdout);
        for (;;) pause();
    }
    if (strcmp(argv[1], "open-rate") == 0 && argc >= 5) {
        double rate = strtod(argv[4], NULL);
        struct timespec t0, now;
        if (rate <= 0) return 2;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (long i = 0; i < n; i++) {
            int fd = open(argv[3], O_RDONLY);
            if (fd < 0) return 1;
            close(fd);
            if (i % 64 != 63) continue;
            /* Ahead of schedule: sleep until the next open is due. */
            clock_gettime(CLOCK_MONOTONIC, &now);
            double ahead = (i + 1) / rate - ((now.tv_sec - t0.tv_sec) + (now.tv_nsec - t0.tv_nsec) / 1e9);
            if (ahead > 0) {
                struct timespec d = {(time_t)ahead, (long)((ahead - (time_t)ahead) * 1e9)};
                nanosleep(&d, NULL);
            }
        }
        return 0;
    }
    if (strcmp(argv[1], "read") == 0 && argc >= 4) {
        int fd = open(argv[3], O_RDONLY);
        char c;
        if (fd < 0) return 1;
        for (long i = 0; i < n; i++)
            if (pread(fd, &c, 1, 0) != 1) return 1;
        return 0;
    }
    if (strcmp(argv[1], "connect") == 0 && argc >= 4) {
        struct sockaddr_in a = {0};
        a.sin_family = AF_INET;
        a.sin_port = htons((unsigned short)atoi(argv[3]));
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        for (long i = 0; i < n; i++) {
            int s = socket(AF_INET, SOCK_STREAM, 0);
            if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof a) != 0) return 1;
            close(s);
        }
        return 0;
    }
    return 2;
}
