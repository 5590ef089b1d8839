/*
 * util.h - small shared helpers: clocks, unit parsing, full reads/writes.
 */
#ifndef TANDEM_UTIL_H
#define TANDEM_UTIL_H

#include <stddef.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define ALIGN8(x) (((x) + 7u) & ~(size_t)7u)
#ifndef MIN
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#endif
#ifndef MAX
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#endif

/* Monotonic clock. */
uint64_t now_ns(void);
static inline uint64_t now_us(void) { return now_ns() / 1000u; }
static inline uint64_t now_ms(void) { return now_ns() / 1000000u; }

/* pthread_cond_timedwait for at most `wait` nanoseconds from now (mutex held). */
void cond_wait_ns(pthread_cond_t *cond, pthread_mutex_t *mutex, uint64_t wait);

/* The median of v[0..n) (sorts v in place); 0 when n is 0. */
uint64_t u64_median(uint64_t *v, size_t n);

/*
 * Parse "25ms", "1s", "1.5s", "500us", "2m" into milliseconds (fractions of
 * a millisecond round down).  A bare number is milliseconds.
 * Returns 0, or -EINVAL.
 */
int parse_duration_ms(const char *s, uint64_t *out);

/* Parse "10M", "256K", "1G", "4096" (binary units) into bytes. */
int parse_size(const char *s, uint64_t *out);

/* Parse an unsigned decimal integer.  Returns 0, -EINVAL, -ERANGE. */
int parse_u64(const char *s, uint64_t *out);

/* Format bytes as "10M"-style text into buf. */
const char *fmt_size(uint64_t bytes, char *buf, size_t len);

/*
 * Read or write exactly len bytes, retrying on EINTR and short transfers.
 * Returns 0, -EPIPE when the peer closed before len bytes (read), or -errno.
 */
int read_full(int fd, void *buf, size_t len);
int write_full(int fd, const void *buf, size_t len);

/*
 * Send exactly len bytes on a stream socket, giving up when the reader takes
 * no byte for stall_ms (the deadline restarts with every byte accepted): a
 * slow reader is fine, one that stopped is not.  Returns 0, -ETIMEDOUT, or
 * -errno (-EPIPE when the reader is gone).
 */
int send_full_bounded(int fd, const void *buf, size_t len, unsigned stall_ms);

/* Hex encoding; hex_decode returns the number of bytes or -EINVAL. */
void hex_encode(const uint8_t *in, size_t len, char *out);
ssize_t hex_decode(const char *in, uint8_t *out, size_t outlen);
/* The value of one hex digit (either case), -1 for any other character. */
int hex_digit(char c);

/* Levenshtein distance, for "did you mean" suggestions. */
unsigned edit_distance(const char *a, const char *b);

#endif
