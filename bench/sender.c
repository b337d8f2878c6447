/* bench/sender.c: send every line of a file to a loopback syslog listener, as fast as possible.
 *
 *   sender udp PORT FILE        one datagram per line (the LF is not sent)
 *
 * Built by bench/run.py with gcc; used only by the benchmarks.  Prints the
 * number of datagrams sent and the seconds it took on stdout.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 4 || strcmp(argv[1], "udp") != 0) {
        fprintf(stderr, "usage: sender udp PORT FILE\n");
        return 2;
    }
    int fd = open(argv[3], O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) { perror(argv[3]); return 1; }
    char *data = mmap(NULL, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (data == MAP_FAILED) { perror("mmap"); return 1; }
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in to = {0};
    to.sin_family = AF_INET;
    to.sin_port = htons(atoi(argv[2]));
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(s, (struct sockaddr *)&to, sizeof to) < 0) { perror("connect"); return 1; }
    long sent = 0;
    double start = now();
    char *p = data, *end = data + st.st_size;
    while (p < end) {
        char *nl = memchr(p, '\n', end - p);
        if (!nl) nl = end;
        if (nl > p) {
            /* ECONNREFUSED / ENOBUFS: keep going, the receiver counts what arrives. */
            if (send(s, p, nl - p, 0) >= 0) sent++;
        }
        p = nl + 1;
    }
    printf("%ld %.6f\n", sent, now() - start);
    return 0;
}
