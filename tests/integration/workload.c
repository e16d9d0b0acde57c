/* A workload with exactly known kernel activity, for the counter tests.
 * Built static so the dynamic loader opens nothing behind our back.
 *   workload exec N        fork + execve(self, "noop") N times
 *   workload noop          exit 0
 *   workload open N PATH [US]  open(PATH, O_RDONLY) + close, N times, US microseconds apart
 *   workload connect N PORT  N TCP connects to 127.0.0.1:PORT, each closed at once
 *   workload serve PORT      accept and close TCP connections on 127.0.0.1:PORT (0: any
 *                            free port) until killed; prints the port once listening
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    if (strcmp(argv[1], "noop") == 0) return 0;
    if (argc < 3) return 2;
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
