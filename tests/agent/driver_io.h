/* What tests/agent/vi_driver.c and walk_driver.c read and write: the planner's C code run as a
 * program on a machine the tests cannot run Python on (aarch64, under qemu;
 * tests/agent/test_kernel_c_aarch64.py packs the input and reads the output).
 *
 * Input (stdin), little-endian 64-bit words: the struct's size, the number of arrays, the
 * offset in the struct of the function pointer the driver sets itself; the struct with every
 * address zeroed; then per array its pointer field's offset in the struct, its kind, its size
 * in bytes and, for kind 1, the size of one block, then its bytes. Kind 0: the field points at
 * the array. Kind 1: the array is blocks of equal size and the field points at a table of
 * pointers, one per block (walk_c's allowed masks per minute). Output (stdout): the function's
 * return code, the struct after it, then every array's bytes as they are after it, in the
 * input's order. LP64 on both machines, and the structs are 8-byte fields alone, so their
 * layout is the same. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    uint64_t n;
    void **bufs;
    uint64_t *lens;
} Arrays;

static int driver_fail(const char *what) {
    fprintf(stderr, "driver: %s\n", what);
    return 2;
}

static int read_all(void *dst, size_t n) { return fread(dst, 1, n, stdin) == n; }

/* the struct (size bytes) into p, its arrays into buffers whose addresses go into it, and the
 * driver's own function (*fn, fn_size bytes: a function pointer) into the field the header
 * names; 0 when done */
static int read_input(void *p, uint64_t size, const void *fn, size_t fn_size, Arrays *a) {
    uint64_t got_size, fn_at;
    if (!read_all(&got_size, 8) || !read_all(&a->n, 8) || !read_all(&fn_at, 8))
        return driver_fail("short header");
    if (got_size != size) return driver_fail("the struct's size is not this build's");
    if (fn_at + fn_size > size) return driver_fail("a function pointer outside the struct");
    if (!read_all(p, size)) return driver_fail("short struct");
    memcpy((char *)p + fn_at, fn, fn_size);
    a->bufs = calloc(a->n, sizeof *a->bufs);
    a->lens = calloc(a->n, sizeof *a->lens);
    if (a->bufs == NULL || a->lens == NULL) return driver_fail("out of memory");
    for (uint64_t i = 0; i < a->n; i++) {
        uint64_t at, kind, block = 0;
        if (!read_all(&at, 8) || !read_all(&kind, 8) || !read_all(&a->lens[i], 8))
            return driver_fail("short array header");
        if (kind == 1 && (!read_all(&block, 8) || block == 0 || a->lens[i] % block != 0))
            return driver_fail("bad blocks");
        if (at + 8 > size || kind > 1) return driver_fail("bad array header");
        a->bufs[i] = aligned_alloc(64, (a->lens[i] + 64) & ~(uint64_t)63);
        if (a->bufs[i] == NULL) return driver_fail("out of memory");
        if (!read_all(a->bufs[i], a->lens[i])) return driver_fail("short array");
        void *field = a->bufs[i];
        if (kind == 1) {
            uint64_t count = a->lens[i] / block;
            char **table = calloc(count + 1, sizeof *table);
            if (table == NULL) return driver_fail("out of memory");
            for (uint64_t b = 0; b < count; b++) table[b] = (char *)a->bufs[i] + b * block;
            field = table;
        }
        memcpy((char *)p + at, &field, sizeof field);
    }
    return 0;
}

static int write_output(int64_t rc, const void *p, uint64_t size, const Arrays *a) {
    fwrite(&rc, 8, 1, stdout);
    fwrite(p, 1, size, stdout);
    for (uint64_t i = 0; i < a->n; i++) fwrite(a->bufs[i], 1, a->lens[i], stdout);
    return fflush(stdout) == 0 ? 0 : driver_fail("write failed");
}
