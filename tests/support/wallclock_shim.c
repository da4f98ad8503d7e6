/* A step of the wall clock for the processes it is preloaded into (tests only).

   Adds the whole seconds written in the file named by $FIELDKIT_WALLCLOCK_OFFSET_FILE (reread
   at most every 100 ms) to CLOCK_REALTIME and its relatives, gettimeofday() and time(). The
   monotonic clocks are left alone, as a real step of the clock (NTP, a date set by hand)
   leaves them: libfaketime's --exclude-monotonic mode makes Python 3.11's time.sleep() fail
   with EINVAL (libfaketime 0.9.10, wolfcw/libfaketime#426), so the kit cannot run under it. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static volatile long offset_seconds;
static volatile long long next_read_ns;

static long long monotonic_ns(void) {
    struct timespec now;
    syscall(SYS_clock_gettime, CLOCK_MONOTONIC, &now);
    return (long long)now.tv_sec * 1000000000LL + now.tv_nsec;
}

static long current_offset(void) {
    long long now = monotonic_ns();
    if (now < next_read_ns) return offset_seconds;
    next_read_ns = now + 100000000LL;
    const char *path = getenv("FIELDKIT_WALLCLOCK_OFFSET_FILE");
    if (path == NULL) return 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return offset_seconds;
    char text[32];
    ssize_t n = read(fd, text, sizeof text - 1);
    close(fd);
    if (n > 0) {
        text[n] = 0;
        offset_seconds = strtol(text, NULL, 10);
    }
    return offset_seconds;
}

static int is_wall_clock(clockid_t clock) {
    return clock == CLOCK_REALTIME || clock == CLOCK_REALTIME_COARSE || clock == CLOCK_TAI;
}

int clock_gettime(clockid_t clock, struct timespec *out) {
    static int (*real)(clockid_t, struct timespec *);
    if (real == NULL) real = (int (*)(clockid_t, struct timespec *))dlsym(RTLD_NEXT, "clock_gettime");
    int done = real(clock, out);
    if (done == 0 && is_wall_clock(clock)) out->tv_sec += current_offset();
    return done;
}

int gettimeofday(struct timeval *restrict out, void *restrict zone) {
    static int (*real)(struct timeval *restrict, void *restrict);
    if (real == NULL) real = (int (*)(struct timeval *restrict, void *restrict))dlsym(RTLD_NEXT, "gettimeofday");
    int done = real(out, zone);
    if (done == 0) out->tv_sec += current_offset();
    return done;
}

time_t time(time_t *out) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    if (out != NULL) *out = now.tv_sec;
    return now.tv_sec;
}
