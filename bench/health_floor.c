/* bench_health.py's C floor: the Python peer's loop in C. Usage: health_floor SECONDS rst|fin PORT...
   Connects to 127.0.0.1:PORT for every port every 2 s (non-blocking, one epoll; closed with an RST
   (SO_LINGER 0) or a plain close (FIN)) and, after a 2.5 s warm-up, prints the user and system seconds
   and the probes of the next SECONDS seconds. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

static double secs(struct timeval a, struct timeval b) {
  return (b.tv_sec - a.tv_sec) + (b.tv_usec - a.tv_usec) * 1e-6;
}

static int rst = 1;

static void close_probe(int s) {
  struct linger zero = {1, 0};
  if (rst)
    setsockopt(s, SOL_SOCKET, SO_LINGER, &zero, sizeof zero);
  close(s);
}

int main(int argc, char **argv) {
  int n = argc - 3, i = 0, measuring = 0, ep = epoll_create1(0);
  double t0 = now(), start = t0 + 2.5, end = start + atof(argv[1]);
  rst = strcmp(argv[2], "fin") != 0;
  int *port = malloc(n * sizeof *port);
  double *due = malloc(n * sizeof *due);
  long done = 0, done0 = 0;
  struct epoll_event ev[256];
  struct rusage r0, r1;
  struct sockaddr_in a;
  for (int k = 0; k < n; k++) {
    port[k] = atoi(argv[k + 3]);
    due[k] = t0 + 2.0 * k / n;
  }
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  for (double t = now(); t < end; t = now()) {
    if (!measuring && t >= start) {
      getrusage(RUSAGE_SELF, &r0);
      done0 = done;
      measuring = 1;
    }
    for (; due[i] <= t; due[i] += 2.0, i = (i + 1) % n) {
      int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      a.sin_port = htons(port[i]);
      if (connect(s, (struct sockaddr *)&a, sizeof a) == 0) {
        close_probe(s);
        done++;
        continue;
      }
      struct epoll_event e = {.events = EPOLLOUT, .data.fd = s};
      epoll_ctl(ep, EPOLL_CTL_ADD, s, &e);
    }
    int k = epoll_wait(ep, ev, 256, 10);
    for (int j = 0; j < k; j++, done++)
      close_probe(ev[j].data.fd);
  }
  getrusage(RUSAGE_SELF, &r1);
  printf("%f %f %ld\n", secs(r0.ru_utime, r1.ru_utime), secs(r0.ru_stime, r1.ru_stime), done - done0);
  return 0;
}
