/* Times libxcrypt's crypt_r(3) on one stored hash: `xcrypt HASH PASSWORD COUNT` prints the
 * nanoseconds of each of COUNT calls, one per line, and exits 1 if a call does not reproduce
 * HASH. Used by the bcrypt side-by-side bench (src/hash/bcrypt/bench.rs), which compiles it. */
#include <crypt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: xcrypt HASH PASSWORD COUNT\n");
        return 2;
    }
    int count = atoi(argv[3]);
    struct crypt_data *data = calloc(1, sizeof *data);
    if (!data) return 2;
    for (int i = 0; i < count; i++) {
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        const char *out = crypt_r(argv[2], argv[1], data);
        clock_gettime(CLOCK_MONOTONIC, &b);
        if (!out || strcmp(out, argv[1]) != 0) {
            fprintf(stderr, "crypt_r did not reproduce the hash\n");
            return 1;
        }
        printf("%lld\n", (long long)(b.tv_sec - a.tv_sec) * 1000000000LL + (b.tv_nsec - a.tv_nsec));
    }
    return 0;
}
